"""What deep layers respond to (Zeiler & Fergus 2013): top-activating patches per unit.

For chosen layers of a trained model (the activations each model sows under
`intermediates`), every unit's (channel's) top-k activations over a dataset are found in one
streaming pass through the training loop's gathered evaluation (memory k x units, whatever
the dataset size; on several processes each reads its slice and the results merge). Each
unit's receptive field in input pixels comes from the layer stack (`layer_geometry`), so each
top activation maps to an image patch; beside it, the unit's input gradient (saliency).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import ops

# Modules off a network's main path: their receptive field is never the largest one
# (ResNet projection shortcuts, Inception's 1x1 / 3x3 / pool branches beside the 5x5 one,
# GoogLeNet's auxiliary classifiers).
_SIDE_PATHS = ("downsample", "branch1", "branch2", "branch4", "aux")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A layer's receptive field: `size` px per side, `jump` px between units, and `start`,
    the input coordinate of unit 0's centre; `is_global` when the layer sees the whole image."""

    size: int
    jump: int
    start: float
    is_global: bool = False

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) pixel bounds (end exclusive) of unit (y, x)'s field,
        clipped at the image border."""
        if self.is_global:
            return 0, height, 0, width
        half = (self.size - 1) / 2
        top = self.start + y * self.jump - half
        left = self.start + x * self.jump - half
        return (int(max(0, np.ceil(top))), int(min(height, np.floor(top + self.size - 1) + 1)),
                int(max(0, np.ceil(left))), int(min(width, np.floor(left + self.size - 1) + 1)))


def _padding_before(padding: Any, n: int, f: int, s: int) -> int:
    """Rows of padding before the first input row, for flax's padding spellings."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return 0
        if padding.upper() == "SAME":
            out = -(-n // s)
            return max((out - 1) * s + f - n, 0) // 2
        raise ValueError(f"unsupported padding {padding!r} for receptive fields")
    if isinstance(padding, int):
        return padding
    first = padding[0]
    return int(first if isinstance(first, int) else first[0])


def _first(value: Any) -> int:
    return int(value if isinstance(value, int) else value[0])


def _layer_of(module: nn.Module, x: jax.Array) -> tuple[int, int, int] | str | None:
    """(f, s, p) of a convolution or pooling module along the height axis, 'global' for a
    pooling to a fixed size, None for modules that keep the geometry."""
    from jaxcnn.models import layers as model_layers

    if isinstance(module, nn.Conv):
        f, s = _first(module.kernel_size), _first(module.strides or 1)
        return f, s, _padding_before(module.padding, x.shape[1], f, s)
    if isinstance(module, (model_layers.MaxPool, model_layers.AvgPool)):
        return module.window, module.stride, _first(module.padding[0])
    if isinstance(module, (model_layers.AdaptiveAvgPool, model_layers.GlobalAvgPool)):
        return "global"
    return None


@contextlib.contextmanager
def _recording_sows(record: Callable[[nn.Module, str], None]) -> Iterator[None]:
    """Call `record(module, name)` at every `sow('intermediates', name, ...)`."""
    original = nn.Module.sow

    def sow(self, col, name, value, *args, **kwargs):
        if col == "intermediates":
            record(self, name)
        return original(self, col, name, value, *args, **kwargs)

    nn.Module.sow = sow
    try:
        yield
    finally:
        nn.Module.sow = original


def _path(module: nn.Module) -> tuple[str, ...]:
    scope = module.scope
    return tuple(scope.path) if scope is not None else ()


def layer_geometry(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Geometry]:
    """The receptive field of every activation the model sows (by name), along its main path.

    `input_shape` is (H, W, C). Padding is included; side paths (projection shortcuts,
    Inception's smaller branches, auxiliary heads) are skipped since the main path's field
    contains theirs.
    """
    stack: list[tuple[int, int, int]] = []
    state = {"global": False}
    geometries: dict[str, Geometry] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and not any(
                part.startswith(_SIDE_PATHS) for part in _path(module)):
            layer = _layer_of(module, args[0]) if args else None
            if layer == "global":
                state["global"] = True
            elif layer is not None:
                stack.append(layer)
        return next_fun(*args, **kwargs)

    def record(module: nn.Module, name: str) -> None:
        if not _path(module):  # the top-level model's own activations
            size, jump, start = ops.receptive_field_geometry(stack)
            geometries[name] = Geometry(size, jump, start, state["global"])

    x = jnp.zeros((1, *input_shape), jnp.float32)
    with _recording_sows(record), nn.intercept_methods(interceptor):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return geometries


def activation_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Name -> shape (without batch) of every activation the model sows."""
    x = jnp.zeros((1, *input_shape), jnp.float32)

    def run():
        variables = model.init(jax.random.key(0), x, train=False)
        variables = {k: v for k, v in variables.items() if k != "intermediates"}
        return model.apply(variables, x, train=False, mutable=["intermediates"])[1]

    sown = jax.eval_shape(run)["intermediates"]
    return {name: tuple(value[0].shape[1:]) for name, value in sown.items()}


def check_layers(model: nn.Module, input_shape: Sequence[int], layers: Sequence[str]) -> None:
    """Raise naming every unknown or non-spatial layer and listing the valid ones."""
    shapes = activation_shapes(model, input_shape)
    spatial = [name for name, shape in shapes.items() if len(shape) == 3]
    bad = [name for name in layers if name not in spatial]
    if bad or not layers:
        raise ValueError(f"unknown or non-spatial layer(s) {bad or '(none given)'}; this model's "
                         f"convolutional layers are: {', '.join(spatial)}")


def activations(model: nn.Module, variables: dict[str, Any], images: jax.Array,
                layers: Sequence[str]) -> dict[str, jax.Array]:
    """The named activations (B, H, W, units) of `images` (already normalised), float32."""
    _, sown = model.apply(variables, images, train=False, mutable=["intermediates"])
    return {name: sown["intermediates"][name][0].astype(jnp.float32) for name in layers}


def unit_maxima(acts: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per example and unit: the largest activation over positions and where (flat y*W+x)."""
    out = {}
    for name, a in acts.items():
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        out[f"{name}/value"] = jnp.max(flat, axis=1)
        out[f"{name}/position"] = jnp.argmax(flat, axis=1).astype(jnp.int32)
    return out


class TopK:
    """Streaming per-unit top-k over gathered batches (memory k x units per layer).

    Ties go to the lower dataset index. After the pass, `values[layer]`, `index[layer]`,
    `position[layer]` and `label[layer]` are (k, units) arrays, best first.
    """

    def __init__(self, layers: Sequence[str], k: int):
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        self.layers, self.k = list(layers), k
        self.values: dict[str, np.ndarray] = {}
        self.index: dict[str, np.ndarray] = {}
        self.position: dict[str, np.ndarray] = {}
        self.label: dict[str, np.ndarray] = {}

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        n = len(outputs["index"])
        if n == 0:
            return
        for name in self.layers:
            value = outputs[f"{name}/value"]
            units = value.shape[1]
            candidates = {
                "values": value,
                "index": np.broadcast_to(outputs["index"][:, None], (n, units)),
                "position": outputs[f"{name}/position"],
                "label": np.broadcast_to(outputs["label"][:, None], (n, units)),
            }
            if name in self.values:
                candidates = {key: np.concatenate([getattr(self, key)[name], part])
                              for key, part in candidates.items()}
            # Sort by value descending, then dataset index ascending: lexsort's last key first.
            order = np.lexsort((candidates["index"], -candidates["values"]), axis=0)[: self.k]
            for key, part in candidates.items():
                getattr(self, key)[name] = np.take_along_axis(part, order, axis=0)

    def result(self) -> dict[str, float]:
        return {f"{name}/class_purity": float(np.mean(class_purity(self.label[name])))
                for name in self.layers if name in self.label}


def class_purity(labels: np.ndarray) -> np.ndarray:
    """Per unit (column of a (k, units) label array): the share of its most common label."""
    return np.array([np.bincount(column).max() / len(column) for column in labels.T])


def inspection_task(model: nn.Module, dataset: Any, layers: Sequence[str], k: int):
    """A train.Task whose evaluation is the streaming per-unit top-k of `layers`."""
    from jaxcnn import losses, train

    check_layers(model, dataset.image_shape, layers)
    return train.Task(
        model=model, dataset=dataset,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"]),
        eval_apply=lambda m, variables, x: activations(m, variables, x, layers),
        output_fn=lambda acts, batch: {**unit_maxima(acts), "label": batch["label"]},
        make_evaluator=lambda: TopK(layers, k),
    )


def top_patches(program: Any, state: Any, layers: Sequence[str], k: int) -> TopK:
    """Run the streaming top-k of `program` (an inspection_task's) over its eval split."""
    from jaxcnn import train

    return train.run_evaluator(program, state, TopK(layers, k))


def fetch_examples(dataset: Any, indices: Sequence[int], batch: int = 256
                   ) -> dict[int, tuple[np.ndarray, int]]:
    """Eval examples by dataset index -> (image HWC in [0, 1], label), in one streaming pass."""
    wanted, found = set(int(i) for i in indices), {}
    for data in dataset.eval_batches(batch):
        for row in np.flatnonzero(data["mask"] > 0):
            index = int(data["index"][row])
            if index in wanted:
                found[index] = (np.asarray(data["image"][row]), int(data["label"][row]))
        if len(found) == len(wanted):
            break
    return found


def saliency(model: nn.Module, variables: dict[str, Any], images: jax.Array, layer: str,
             units: jax.Array, positions: jax.Array, normalize: Callable = lambda x: x
             ) -> jax.Array:
    """d activation(layer, unit, position) / d input pixels, one per image: (N, H, W, C)."""

    def one(image, unit, position):
        def unit_activation(img):
            a = activations(model, variables, normalize(img[None]), [layer])[layer][0]
            return a.reshape(-1, a.shape[-1])[position, unit]

        return jax.grad(unit_activation)(image)

    return jax.jit(jax.vmap(one))(images, units, positions)


TEXT_HEIGHT = 16  # px of one line of labels or title in the PNG grids


def _font(height: int) -> Any:
    from PIL import ImageFont  # only the drawing functions need Pillow

    return ImageFont.load_default(size=height - 4)


def text_band(width: int, text: str, height: int = TEXT_HEIGHT) -> np.ndarray:
    """A (height, width, 3) white uint8 band with `text` in black, left-aligned."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(band).text((2, 1), text, fill="black", font=_font(height))
    return np.asarray(band, np.uint8)


def _titled(grid: np.ndarray, title: str) -> np.ndarray:
    """`grid` under a title band, padded on the right with white if the title is wider."""
    if not title:
        return grid
    width = max(grid.shape[1], int(_font(TEXT_HEIGHT).getlength(title)) + 6)
    grid = np.pad(grid, ((0, 0), (0, width - grid.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([text_band(width, title), grid])


def filter_grid(kernel: np.ndarray, columns: int = 8, scale: int | None = None,
                title: str = "", min_side: int = 36) -> np.ndarray:
    """First-layer filters (f, f, C, units) as one uint8 image grid, each scaled to [0, 255],
    drawn at least `min_side` px wide (nearest-neighbour), its unit number under it, under
    a title band when `title` is given."""
    kernel = np.asarray(kernel, np.float32)
    f, _, channels, units = kernel.shape
    scale = scale or -(-min_side // f)
    rows = -(-units // columns)
    side = f * scale
    cell_w, cell_h = side + 4, side + 4 + TEXT_HEIGHT
    grid = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for u in range(units):
        w = kernel[..., u]
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
        w = np.repeat(np.repeat(w, scale, 0), scale, 1)
        if channels != 3:
            w = np.repeat(w.mean(-1, keepdims=True), 3, -1)
        r, c = divmod(u, columns)
        y, x = r * cell_h + 2, c * cell_w + 2
        grid[y : y + side, x : x + side] = (w * 255).astype(np.uint8)
        grid[y + side : y + side + TEXT_HEIGHT, x - 2 : x - 2 + cell_w] = text_band(
            cell_w, str(u))
    return _titled(grid, title)


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (top, bottom, left, right) box of an HWC image."""
    top, bottom, left, right = box
    return image[top:bottom, left:right]


def _cell(array: np.ndarray, side: int) -> np.ndarray:
    """An HWC [0, 1] patch as a side x side uint8 RGB cell (nearest-neighbour, centred)."""
    array = np.asarray(array, np.float32)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, -1)
    h, w = array.shape[:2]
    scale = max(1, side // max(h, w))
    array = np.repeat(np.repeat(array, scale, 0), scale, 1)[:side, :side]
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - array.shape[0]) // 2, (side - array.shape[1]) // 2
    out[top : top + array.shape[0], left : left + array.shape[1]] = (
        np.clip(array, 0, 1) * 255).astype(np.uint8)
    return out


def saliency_image(gradient: np.ndarray) -> np.ndarray:
    """|gradient| summed over channels, scaled to [0, 1], as an HW1 image."""
    magnitude = np.abs(np.asarray(gradient, np.float32)).sum(-1, keepdims=True)
    return magnitude / max(float(magnitude.max()), 1e-12)


def patch_grid(patches: Sequence[Sequence[np.ndarray]], saliencies: Sequence[Sequence[np.ndarray]],
               side: int = 48, title: str = "",
               row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Rows of units, each a row of (patch | saliency) pairs, as one uint8 RGB image; a
    title band on top when `title` is given and `row_labels[r]` (e.g. 'unit 12, purity
    0.67') in a band under row r."""
    rows = len(patches)
    columns = max(len(row) for row in patches)
    pair = 2 * side + 6
    label_h = TEXT_HEIGHT if row_labels is not None else 0
    row_h = side + 4 + label_h
    width = max(columns * pair, 8 * TEXT_HEIGHT)
    grid = np.full((rows * row_h, width, 3), 255, np.uint8)
    for r, (row, row_saliency) in enumerate(zip(patches, saliencies)):
        for c, (patch, sal) in enumerate(zip(row, row_saliency)):
            y, x = r * row_h + 2, c * pair + 2
            grid[y : y + side, x : x + side] = _cell(patch, side)
            grid[y : y + side, x + side + 1 : x + 2 * side + 1] = _cell(sal, side)
        if row_labels is not None:
            y = r * row_h + side + 4
            grid[y : y + label_h] = text_band(width, row_labels[r])
    return _titled(grid, title)
