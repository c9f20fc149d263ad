"""Neural style transfer (Gatys et al. 2015): an image with one image's content and another's
style, found by gradient descent on its pixels through a pretrained VGG's features.

The feature network is the registry VGG-16/19's convolution stack, walked from its params
(same names), with activations addressable as conv{s}_{i} (before the ReLU) and relu{s}_{i}.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses
from jaxcnn.models.layers import conv_fn, pool2d
from jaxcnn.models.registry import get_model
from jaxcnn.models.vgg import CONFIGS as VGG_CONFIGS
from jaxcnn.models.vgg import FEATURE_DEPTHS, TORCHVISION, FeatureNet, Params

DEPTHS = FEATURE_DEPTHS  # pretrained FeatureNets come from jaxcnn.weights
CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
POOLINGS = ("max", "avg")
INITS = ("noise", "content", "blend", "colour")
OPTIMIZERS = ("adam", "lbfgs")

# --- layer names -------------------------------------------------------------------------


def layer_names(depth: int = 16) -> list[str]:
    """The addressable activations of VGG-`depth` in network order: conv{s}_{i}, relu{s}_{i}."""
    _check_depth(depth)
    return [f"{kind}{s}_{i}" for s, stage in enumerate(VGG_CONFIGS[depth], start=1)
            for i in range(1, len(stage) + 1) for kind in ("conv", "relu")]


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS} (VGG-16, VGG-19); received {depth!r}")


def check_layers(names: Sequence[str], depth: int, argument: str = "layers") -> None:
    """Raise a ValueError listing the valid names unless every name is a VGG-`depth` layer."""
    valid = layer_names(depth)
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"{argument}: unknown layer(s) {unknown} for VGG-{depth}; valid "
                         f"names: {', '.join(valid)}")


def _stage(name: str) -> int:
    return int(re.fullmatch(r"(?:conv|relu)(\d)_\d", name).group(1))


def min_image_side(layers: Sequence[str]) -> int:
    """Smallest image side reaching every one of `layers` (each earlier stage halves it)."""
    return 2 ** (max(_stage(name) for name in layers) - 1)


# --- the feature view --------------------------------------------------------------------


def vgg_features(
    params: Params, x: jax.Array, layers: Sequence[str], *, depth: int = 16,
    pooling: str = "max", conv: str = "xla",
) -> dict[str, jax.Array]:
    """{name: activation (N, h, w, C)} of the VGG conv stack on preprocessed NHWC `x`, run up
    to the deepest of `layers` only. With max pooling the values are those of the registry
    VGG's conv modules and relu intermediates; `conv` names the kernels (jaxcnn.kernels).
    """
    if not layers:
        raise ValueError("layers must name at least one activation; received none")
    check_layers(layers, depth)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; received {pooling!r}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x must be NHWC with 3 channels; received shape {x.shape}")
    side = min_image_side(layers)
    if min(x.shape[1:3]) < side:
        raise ValueError(f"x is too small: layers in stage {max(map(_stage, layers))} need "
                         f"H, W >= {side}; received shape {x.shape}")
    wanted, last = set(layers), max(layer_names(depth).index(name) for name in layers)
    convolve, out = conv_fn(conv), {}
    names = iter(layer_names(depth)[: last + 1])
    for s, stage in enumerate(VGG_CONFIGS[depth], start=1):
        if s > 1:
            x = pool2d(x, pooling, 2, 2)
        for i in range(1, len(stage) + 1):
            layer = params[f"conv{s}_{i}"]
            x = convolve(x, layer["kernel"], (1, 1), ((1, 1), (1, 1)),
                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["bias"]
            for value in (x, jax.nn.relu(x)):
                name = next(names, None)
                if name is None:
                    return out
                if name in wanted:
                    out[name] = value
            x = jax.nn.relu(x)
    return out


# --- untrained weights -------------------------------------------------------------------


def random_weights(depth: int = 16, seed: int = 0) -> FeatureNet:
    """Untrained features: the registry VGG-`depth`'s conv params (names, shapes) drawn as its
    initialisation draws them (torchvision's: normal with std sqrt(2 / fan_out), zero biases)."""
    _check_depth(depth)
    model = get_model(f"vgg{depth}", num_classes=1)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    convs = {name: shapes["params"][name] for name in sorted(shapes["params"])
             if name.startswith("conv")}
    sizes = [layer["kernel"].size for layer in convs.values()]
    # One normal draw for all kernels (one small program: per-shape draws compile for ~30 s
    # on a loaded 2-core machine), each slice scaled to the model's init std sqrt(2/fan_out).
    noise = np.asarray(jax.random.normal(jax.random.key(seed), (sum(sizes),), jnp.float32))
    params, offset = {}, 0
    for (name, layer), size in zip(convs.items(), sizes):
        h, w, _, out = layer["kernel"].shape
        kernel = noise[offset:offset + size].reshape(layer["kernel"].shape)
        params[name] = {"kernel": jnp.asarray(kernel * np.sqrt(2.0 / (h * w * out))),
                        "bias": jnp.zeros(layer["bias"].shape, jnp.float32)}
        offset += size
    return FeatureNet(depth, params, TORCHVISION, f"random VGG-{depth} (seed {seed})", False)


# --- the objective and the optimisation ---------------------------------------------------


def _as_image(name: str, image: Any) -> jax.Array:
    image = jnp.asarray(image, jnp.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be one RGB image (H, W, 3) or (1, H, W, 3) in [0, 1]; "
                         f"received shape {image.shape}")
    return image


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, for jax.jit
class Objective:
    """J(G) = alpha J_content(C, G) + beta sum_l w_l J_style^l(S, G) + tv_weight TV(G) on
    `net`'s features; `targets` holds C's content activation and S's Gram matrices."""

    net: FeatureNet
    content_layer: str
    style_weights: dict[str, float]
    alpha: float
    beta: float
    tv_weight: float
    pooling: str
    conv: str

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys([self.content_layer, *self.style_weights]))

    def features(self, params: Params, images: jax.Array) -> dict[str, jax.Array]:
        """Activations of all the objective's layers for RGB [0, 1] `images`."""
        return vgg_features(params, self.net.preprocessing(images), self.layers,
                            depth=self.net.depth, pooling=self.pooling, conv=self.conv)

    def targets(self, params: Params, content: jax.Array, style: jax.Array) -> dict[str, Any]:
        """C's content-layer activation and S's Gram matrix per style layer."""
        a_C = self.features(params, content)[self.content_layer]
        a_S = self.features(params, style)
        return {"content": a_C, "grams": {name: losses.gram_matrix(a_S[name])
                                          for name in self.style_weights}}

    def __call__(self, image: jax.Array, params: Params,
                 targets: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(J(image), {"total", "content", "style" (the weighted sum over layers), "tv",
        "style/<layer>" (each layer's, unweighted)})."""
        a_G = self.features(params, image)
        parts = {"content": losses.content_cost(targets["content"], a_G[self.content_layer])}
        style = jnp.zeros((), jnp.float32)
        for name, weight in self.style_weights.items():
            parts[f"style/{name}"] = losses.style_cost_from_gram(targets["grams"][name],
                                                                 a_G[name])
            style = style + weight * parts[f"style/{name}"]
        parts["style"] = style
        parts["tv"] = losses.total_variation(image)
        total = self.alpha * parts["content"] + self.beta * style
        if self.tv_weight:
            total = total + self.tv_weight * parts["tv"]
        parts["total"] = total
        return total, parts


def make_objective(
    net: FeatureNet, *, content_layer: str = CONTENT_LAYER,
    style_layers: Sequence[str] = STYLE_LAYERS, style_weights: Sequence[float] | None = None,
    alpha: float = 1.0, beta: float = 1.0, tv_weight: float = 0.0, pooling: str = "max",
    conv: str = "xla",
) -> Objective:
    """The style-transfer objective on `net`; style weights default to 1/len(style_layers).

    conv="xla": only input gradients are needed, and XLA's convolution was the fastest for
    them here (1.9 vs 2.7 s per 192x256 step with "auto", which adds `materialize`).
    """
    check_layers([content_layer], net.depth, "content_layer")
    check_layers(style_layers, net.depth, "style_layers")
    if not style_layers:
        raise ValueError("style_layers must name at least one layer; received none")
    if style_weights is None:
        style_weights = [1.0 / len(style_layers)] * len(style_layers)
    if len(style_weights) != len(style_layers):
        raise ValueError(f"style_weights must have one weight per style layer "
                         f"({len(style_layers)}); received {len(style_weights)}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; received {pooling!r}")
    weights = {name: float(w) for name, w in zip(style_layers, style_weights)}
    return Objective(net, content_layer, weights, float(alpha), float(beta), float(tv_weight),
                     pooling, conv)


def initial_image(content: jax.Array, init: str, key: jax.Array,
                  noise_ratio: float = 0.6, style: jax.Array | None = None) -> jax.Array:
    """The starting image (1, H, W, 3): uniform noise in [0, 1], the content image,
    noise_ratio * noise + (1 - noise_ratio) * content ("blend"), or the content with its
    colours mapped to the style's mean and covariance ("colour", `match_colours`)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; received {init!r}")
    noise = jax.random.uniform(key, content.shape, jnp.float32)
    if init == "noise":
        return noise
    if init == "content":
        return content
    if init == "colour":
        if style is None:
            raise ValueError("init='colour' needs the style image; received style=None")
        return jnp.asarray(match_colours(content[0], style[0]))[None]
    return noise_ratio * noise + (1.0 - noise_ratio) * content


def make_optimizer(optimizer: str, learning_rate: float | None) -> optax.GradientTransformation:
    """optax Adam (learning rate in pixel units per step) or L-BFGS (zoom line search)."""
    if optimizer == "adam":
        return optax.adam(0.02 if learning_rate is None else learning_rate)
    if optimizer == "lbfgs":
        return optax.lbfgs(learning_rate)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}; received {optimizer!r}")


def make_step(objective: Objective, tx: optax.GradientTransformation) -> Callable:
    """The jit-compiled update `(image, opt_state, params, targets) -> (image, opt_state,
    costs at the incoming image)`; pixels are clipped back to [0, 1] after each update.
    line_search=True (optax.lbfgs) hands the optimiser the value and the value function."""
    def step(image, opt_state, params, targets, *, line_search: bool):
        (total, parts), grad = jax.value_and_grad(objective, has_aux=True)(
            image, params, targets)
        if line_search:
            updates, opt_state = tx.update(
                grad, opt_state, image, value=total, grad=grad,
                value_fn=lambda x: objective(x, params, targets)[0])
        else:
            updates, opt_state = tx.update(grad, opt_state, image)
        image = jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0)
        return image, opt_state, parts

    return jax.jit(step, static_argnames="line_search", donate_argnums=(0, 1))


def transfer(
    content: Any, style: Any, *, net: FeatureNet, content_layer: str = CONTENT_LAYER,
    style_layers: Sequence[str] = STYLE_LAYERS, style_weights: Sequence[float] | None = None,
    alpha: float = 1.0, beta: float = 1.0, tv_weight: float = 0.0, steps: int = 300,
    optimizer: str = "adam", learning_rate: float | None = None, init: str = "noise",
    noise_ratio: float = 0.6, seed: int = 0, pooling: str = "max", conv: str = "xla",
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Minimise alpha J_content(C, G) + beta J_style(S, G) (+ tv_weight TV(G)) over the
    pixels of G, from `init`, with `steps` jit-compiled updates of `optimizer`.

    content, style: RGB (H, W, 3) or (1, H, W, 3) in [0, 1], the same size. Returns the image
    (H, W, 3) in [0, 1] and the history {"total", "content", "style" (weighted sum), "tv",
    "style/<layer>" (unweighted)}: arrays of steps + 1 costs, at the start image and after
    each update.
    `callback(step, costs)` is called after each update with the costs before it.
    """
    content, style = _as_image("content", content), _as_image("style", style)
    if style.shape != content.shape:
        raise ValueError(f"style must have content's shape {content.shape[1:]}; received "
                         f"{style.shape[1:]} (resize it first)")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; received {steps}")
    objective = make_objective(net, content_layer=content_layer, style_layers=style_layers,
                               style_weights=style_weights, alpha=alpha, beta=beta,
                               tv_weight=tv_weight, pooling=pooling, conv=conv)
    side = min_image_side(objective.layers)
    if min(content.shape[1:3]) < side:
        raise ValueError(f"content is too small for layers {objective.layers}: expected H, W "
                         f">= {side}; received {content.shape[1:3]}")
    tx = make_optimizer(optimizer, learning_rate)
    params = net.params
    targets = jax.jit(objective.targets)(params, content, style)
    image = initial_image(content, init, jax.random.key(seed), noise_ratio, style)
    # Fresh buffers: the step donates both, and L-BFGS's first state holds `image` itself.
    opt_state = jax.tree.map(jnp.array, tx.init(image))
    step = make_step(objective, tx)
    records: list[dict[str, jax.Array]] = []
    for index in range(steps):
        image, opt_state, parts = step(image, opt_state, params, targets,
                                       line_search=optimizer == "lbfgs")
        records.append(parts)
        if callback is not None:
            callback(index, {name: float(value) for name, value in parts.items()})
    records.append(jax.jit(objective)(image, params, targets)[1])
    history = {name: np.asarray([float(r[name]) for r in records]) for name in records[0]}
    return np.asarray(image[0]), history


def reference_costs(content: Any, style: Any, *, net: FeatureNet, **objective_kwargs: Any
                    ) -> dict[str, float]:
    """The yardsticks of a transfer: the content image's style cost against the style image
    ("content_image_style") and the style image's content cost ("style_image_content")."""
    content, style = _as_image("content", content), _as_image("style", style)
    objective = make_objective(net, **objective_kwargs)
    targets = jax.jit(objective.targets)(net.params, content, style)
    evaluate = jax.jit(objective)
    return {"content_image_style": float(evaluate(content, net.params, targets)[1]["style"]),
            "style_image_content": float(evaluate(style, net.params, targets)[1]["content"])}


# --- pixel-space quality measures (independent of the feature network) ---------------------

# Rec. 709 luma, as skimage.color.rgb2gray.
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # skimage's gaussian_weights=True window: truncate 3.5
# The "done when" thresholds (issue 34), per pair of the development grid.
MAX_STYLE_RATIO, MAX_CONTENT_RATIO = 0.01, 0.5
MIN_SSIM_FACTOR, MAX_COLOUR_FACTOR, MAX_TV_FACTOR = 2.0, 0.5, 1.5


def _as_rgb(name: str, image: Any) -> jax.Array:
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be one RGB image (H, W, 3) in [0, 1]; received shape "
                         f"{image.shape}")
    return image


def grey(image: Any) -> jax.Array:
    """(H, W) luminance of an RGB (H, W, 3) image in [0, 1] (Rec. 709 weights)."""
    return _as_rgb("image", image) @ jnp.asarray(GREY_WEIGHTS, jnp.float32)


def ssim(a: Any, b: Any) -> jax.Array:
    """Mean structural similarity of two grey (H, W) images in [0, 1]: Wang et al.'s SSIM with
    an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population (co)variances, averaged
    over the windows that fit inside the image (skimage's gaussian_weights=True,
    use_sample_covariance=False, data_range=1)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.ndim != 2 or a.shape != b.shape or min(a.shape) <= 2 * SSIM_RADIUS:
        raise ValueError(f"a and b must be grey images (H, W) of one shape, larger than "
                         f"{2 * SSIM_RADIUS} px a side; received {a.shape} and {b.shape}")
    taps = jnp.exp(-0.5 * (jnp.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()

    def blur(x):  # separable 'valid' Gaussian: one value per window inside the image
        x = jax.vmap(lambda row: jnp.convolve(row, taps, mode="valid"))(x)
        return jax.vmap(lambda col: jnp.convolve(col, taps, mode="valid"), 1, 1)(x)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
             / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return index.mean()


def colour_statistics(image: Any) -> tuple[jax.Array, jax.Array]:
    """(mean (3,), population covariance (3, 3)) of an RGB image's pixels."""
    pixels = _as_rgb("image", image).reshape(-1, 3)
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    return mean, centred.T @ centred / pixels.shape[0]


def _psd_sqrt(matrix: jax.Array) -> jax.Array:
    values, vectors = jnp.linalg.eigh(matrix)
    return (vectors * jnp.sqrt(jnp.clip(values, 0.0))) @ vectors.T


def colour_distance(a: Any, b: Any) -> jax.Array:
    """2-Wasserstein distance between Gaussians fitted to two RGB images' pixel colours:
    sqrt(|m_a - m_b|^2 + tr(S_a + S_b - 2 (S_b^1/2 S_a S_b^1/2)^1/2)), in [0, 1] RGB units."""
    mean_a, cov_a = colour_statistics(a)
    mean_b, cov_b = colour_statistics(b)
    root_b = _psd_sqrt(cov_b)
    cross = jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(root_b @ cov_a @ root_b), 0.0)).sum()
    squared = jnp.sum((mean_a - mean_b) ** 2) + jnp.trace(cov_a) + jnp.trace(cov_b) - 2 * cross
    return jnp.sqrt(jnp.clip(squared, 0.0))


def tv_per_pixel(image: Any) -> jax.Array:
    """Mean absolute difference between vertical neighbours plus that between horizontal
    neighbours of an RGB (H, W, 3) image in [0, 1], over all channels (speckle raises it)."""
    image = _as_rgb("image", image)
    return (jnp.abs(image[1:] - image[:-1]).mean() + jnp.abs(image[:, 1:] - image[:, :-1]).mean())


def match_colours(image: Any, target: Any, eps: float = 1e-3) -> np.ndarray:
    """`image` with its pixel colours mapped to `target`'s mean and covariance by the linear
    optimal-transport map between the two Gaussians, clipped to [0, 1] (H, W, 3)."""
    mean_i, cov_i = colour_statistics(image)
    mean_t, cov_t = colour_statistics(target)
    # A grey image's covariance has rank 1: add eps x its mean variance to the diagonal.
    cov_i = cov_i + (eps * jnp.trace(cov_i) / 3 + 1e-8) * jnp.eye(3)
    root = _psd_sqrt(cov_i)
    inverse_root = jnp.linalg.inv(root)
    transport = inverse_root @ _psd_sqrt(root @ cov_t @ root) @ inverse_root
    mapped = (jnp.asarray(image, jnp.float32) - mean_i) @ transport.T + mean_t
    return np.asarray(jnp.clip(mapped, 0.0, 1.0))


def quality(result: Any, content: Any, style: Any) -> dict[str, float]:
    """The pixel-space measures of a transfer next to their yardsticks: SSIM of the grey
    result (and of the grey style) with the grey content; the colour distance of the result
    (and of the content) to the style; TV per pixel of the result, the content, the style."""
    result, content, style = (np.asarray(_as_rgb(name, x)) for name, x in
                              (("result", result), ("content", content), ("style", style)))
    grey_content = grey(content)
    return {
        "ssim": float(ssim(grey(result), grey_content)),
        "ssim_style": float(ssim(grey(style), grey_content)),
        "colour": float(colour_distance(result, style)),
        "colour_content": float(colour_distance(content, style)),
        "tv": float(tv_per_pixel(result)),
        "tv_content": float(tv_per_pixel(content)),
        "tv_style": float(tv_per_pixel(style)),
    }


def criteria(measures: Mapping[str, float], style_ratio: float,
             content_ratio: float) -> dict[str, bool]:
    """Issue 34's "done when" per pair, from `quality`'s measures and the two cost ratios."""
    return {
        "style_ratio": style_ratio <= MAX_STYLE_RATIO,
        "content_ratio": content_ratio <= MAX_CONTENT_RATIO,
        "ssim": measures["ssim"] >= MIN_SSIM_FACTOR * measures["ssim_style"],
        "colour": measures["colour"] <= MAX_COLOUR_FACTOR * measures["colour_content"],
        "tv": measures["tv"] <= MAX_TV_FACTOR * max(measures["tv_content"],
                                                    measures["tv_style"]),
    }
