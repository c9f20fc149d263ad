"""Top-activating patches per unit of a trained run (Zeiler & Fergus's "visualizing deep layers").

python -m experiments.inspect_layers --workdir=TRAINED_RUN [--layers=relu1,relu2,...]
    [--units=9] [--top_k=9] --output=DIR

Reads the run's config (workdir/config.json) and latest checkpoint, streams the run's eval split
once through the training loop's gathered evaluation, and writes one PNG grid per layer
(units x top-k patches, each with its saliency map), the first layer's filters, and index.md:
each layer's receptive field, and for each unit where each patch came from and the class purity
of its top-k patches (the share of the most common label).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image

from experiments import common
from jaxcnn import inspection, tasks

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional config file[:overrides] "
                                          "replacing the run's own (e.g. another data_dir).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
_LAYERS = flags.DEFINE_list("layers", None, "Layers to inspect (default: the first five "
                            "convolutional layers the model names).")
_UNITS = flags.DEFINE_integer("units", 9, "Units shown per layer (the most active ones).")
_TOP_K = flags.DEFINE_integer("top_k", 9, "Top patches per unit.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the PNGs and index.md go.")
flags.mark_flags_as_required(["workdir", "output"])


def _first_kernel(params) -> np.ndarray:
    """The first convolution kernel (f, f, C, units) in the parameter tree's order."""
    for leaf in jax.tree.leaves(params):
        if leaf.ndim == 4:
            return np.asarray(leaf)
    raise ValueError("the model has no convolution kernel")


def _chosen_units(topk: inspection.TopK, layer: str, count: int) -> np.ndarray:
    """The `count` units with the largest best activation (deterministic)."""
    best = topk.values[layer][0]
    return np.argsort(-best, kind="stable")[: min(count, len(best))]


def _run_summary(config, workdir: str, step: int) -> str:
    """'model `name` {kwargs}, checkpoint step N[, eval top-1 X %]' (top-1 from the run's
    final_metrics.json when it was written at this step)."""
    kwargs = dict(config.model_kwargs or {})
    text = f"model `{config.model}`{f' {kwargs}' if kwargs else ''}, checkpoint step {step}"
    path = os.path.join(workdir, "final_metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
        if metrics.get("step") == step and "top1" in metrics:
            text += f", eval top-1 {100 * metrics['top1']:.1f} %"
    return text


def main(argv):
    del argv
    common.quiet_logging()
    found: dict[str, Any] = {}

    def build(config):  # the run's own task, its evaluation the streaming top-k
        base = tasks.build(config)
        shapes = inspection.activation_shapes(base.model, tuple(base.dataset.image_shape))
        spatial = [name for name, shape in shapes.items() if len(shape) == 3]
        found.update(base=base, shapes=shapes, layers=_LAYERS.value or spatial[:5])
        return inspection.inspection_task(base.model, base.dataset, found["layers"],
                                          _TOP_K.value)

    run = tasks.load_run(_WORKDIR.value, task=build, config=_CONFIG.value)
    base, shapes, layers = found["base"], found["shapes"], found["layers"]
    config, program, step, state = run.config, run.program, run.step, run.state
    image_shape = tuple(base.dataset.image_shape)
    print(f"checkpoint step {step}: streaming {base.dataset.num_eval} eval images through "
          f"{', '.join(layers)}", flush=True)
    topk = inspection.top_patches(program, state, layers, _TOP_K.value)
    geometry = inspection.layer_geometry(base.model, image_shape)
    variables = jax.device_get(run.variables)
    normalize = program.normalize
    chosen = {layer: _chosen_units(topk, layer, _UNITS.value) for layer in layers}
    needed = {int(i) for layer in layers for i in topk.index[layer][:, chosen[layer]].ravel()}
    examples = inspection.fetch_examples(base.dataset, sorted(needed))
    height, width = image_shape[:2]
    os.makedirs(_OUTPUT.value, exist_ok=True)
    kernel = _first_kernel(variables["params"])
    Image.fromarray(inspection.filter_grid(
        kernel, title=f"{config.model}: first-layer filters ({'x'.join(map(str, kernel.shape[:3]))}"
                      f"), units 0-{kernel.shape[3] - 1}")).save(
        os.path.join(_OUTPUT.value, "filters_layer1.png"))
    lines = [f"# Top-{_TOP_K.value} patches per unit", "",
             f"Run `{_WORKDIR.value}` ({_run_summary(config, _WORKDIR.value, step)}), "
             f"{base.dataset.num_eval} eval images of `{config.dataset}`.", "",
             "| layer | receptive field (px) | jump (px) | units | mean class purity of the "
             f"top-{_TOP_K.value} (shown units) | (all units) |", "|---|---|---|---|---|---|"]
    details = []
    for number, layer in enumerate(layers, start=1):
        geo, units = geometry[layer], chosen[layer]
        map_w = shapes[layer][1]
        index, position = topk.index[layer][:, units], topk.position[layer][:, units]
        images = jnp.asarray(np.stack([examples[int(i)][0] for i in index.T.ravel()]))
        unit_ids = jnp.asarray(np.repeat(units, _TOP_K.value), jnp.int32)
        grads = np.asarray(inspection.saliency(base.model, variables, images, layer, unit_ids,
                                            jnp.asarray(position.T.ravel()), normalize))
        patches, saliencies, purity = [], [], inspection.class_purity(topk.label[layer][:, units])
        details += [f"## Layer {number}: `{layer}`", "",
                    f"Receptive field {geo.size} px, jump {geo.jump} px, "
                    f"unit (0, 0) centred at pixel {geo.start:g}.", ""]
        for u, unit in enumerate(units):
            row, row_sal, where = [], [], []
            for r in range(_TOP_K.value):
                flat = u * _TOP_K.value + r
                y, x = divmod(int(position[r, u]), map_w)
                box = geo.box(y, x, height, width)
                row.append(inspection.crop(np.asarray(images[flat]), box))
                row_sal.append(inspection.saliency_image(inspection.crop(grads[flat], box)))
                where.append(f"#{int(index[r, u])} (label {int(topk.label[layer][r, unit])}, "
                             f"rows {box[0]}-{box[1]}, cols {box[2]}-{box[3]})")
            patches.append(row)
            saliencies.append(row_sal)
            details.append(f"- unit {int(unit)}: purity {purity[u]:.2f}; " + ", ".join(where))
        details.append("")
        name = f"layer{number}_{layer}.png"
        Image.fromarray(inspection.patch_grid(
            patches, saliencies,
            title=f"{config.model}, layer {number} {layer}: receptive field {geo.size} px; "
                  f"top-{_TOP_K.value} patches | saliency per unit",
            row_labels=[f"unit {int(unit)}, purity {purity[u]:.2f}"
                        for u, unit in enumerate(units)])).save(
            os.path.join(_OUTPUT.value, name))
        all_purity = float(np.mean(inspection.class_purity(topk.label[layer])))
        lines.append(f"| {number}: `{layer}` ([png]({name})) | {geo.size} | {geo.jump} | "
                     f"{shapes[layer][2]} | {np.mean(purity):.3f} | {all_purity:.3f} |")
        print(f"{layer}: receptive field {geo.size} px, mean class purity {np.mean(purity):.3f} "
              f"(all units {all_purity:.3f})", flush=True)
    with open(os.path.join(_OUTPUT.value, "index.md"), "w") as f:
        f.write("\n".join([*lines, "", "First-layer filters: [filters_layer1.png]"
                           "(filters_layer1.png)", "", *details]) + "\n")
    print(f"wrote {_OUTPUT.value}/index.md", flush=True)


if __name__ == "__main__":
    common.run(main)
