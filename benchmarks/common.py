"""What the benchmark scripts share: CPU-sized default inputs and the project's steps."""

from __future__ import annotations

import ast
import math
from typing import Any

# name -> (batch, (H, W, C)): sized so that one train step takes about a second or less.
DEFAULTS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "lenet5": (256, (32, 32, 1)),
    "alexnet": (64, (112, 112, 3)),
    "googlenet": (32, (112, 112, 3)),
    "googlenet_bn": (32, (112, 112, 3)),
    "resnet18": (32, (112, 112, 3)),
    "resnet34": (32, (112, 112, 3)),
}
for _n in ("resnet50", "resnet101", "resnet152"):
    DEFAULTS[_n] = (32, (64, 64, 3))
for _d in (11, 13, 16, 19):
    DEFAULTS[f"vgg{_d}"] = DEFAULTS[f"vgg{_d}_bn"] = (16, (64, 64, 3))
for _d in (18, 34, 50, 101, 152):
    DEFAULTS[f"resnet{_d}_cifar"] = (32, (32, 32, 3))
for _d in (20, 32, 44, 56, 110):
    DEFAULTS[f"resnet{_d}_cifar"] = (128, (32, 32, 3))
FALLBACK_BATCH, FALLBACK_SIDE = 32, 64


def model_config(name: str, batch: int, image: str | None) -> tuple[int, tuple[int, int, int]]:
    """The batch and (H, W, C) to run `name` at: the given values where set, else DEFAULTS,
    else the registry's native input (jaxcnn.models.model_info) capped at FALLBACK_SIDE."""
    if name in DEFAULTS:
        default_batch, default_shape = DEFAULTS[name]
    else:
        from jaxcnn import models

        h, w, c = models.model_info(name).input_shape
        default_batch = FALLBACK_BATCH
        default_shape = (min(h, FALLBACK_SIDE), min(w, FALLBACK_SIDE), c)
    shape = tuple(int(v) for v in image.split(",")) if image else default_shape
    if len(shape) != 3:
        raise ValueError(f"input must be H,W,C; received {image!r}")
    return batch or default_batch, shape


class SyntheticData:
    """Just enough of a dataset for `tasks.classification.make_task` and `init_state`."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        self.image_shape, self.num_classes = image_shape, num_classes
        self.mean, self.std = [0.0] * image_shape[2], [1.0] * image_shape[2]


def parse_kwargs(text: str) -> dict[str, Any]:
    """'key=value;key=value' -> dict (values as Python literals where they parse)."""
    kwargs: dict[str, Any] = {}
    for item in filter(None, text.split(";")):
        key, value = item.split("=", 1)
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


MAX_POOLS = ("views", "reduce_window")


def use_max_pool(impl: str) -> None:
    """Make this process's "xla" kernels pool with `impl` (a measurement switch, not a library
    option): 'reduce_window' is XLA's op (the default), 'views' the running max over strided
    views of jaxcnn.kernels.xla_cpu; the convolution stays XLA's."""
    import dataclasses

    from jaxcnn import kernels

    if impl not in MAX_POOLS:
        raise ValueError(f"max_pool must be one of {MAX_POOLS}; received {impl!r}")
    pool = kernels.xla_cpu.max_pool if impl == "views" else kernels.xla_max_pool
    kernels.KERNELS["xla"] = dataclasses.replace(kernels.KERNELS["xla"], max_pool=pool)


def project_program(name: str, shape: tuple[int, int, int], num_classes: int,
                    model_kwargs: dict[str, Any] | None = None, batch: int = 8,
                    dtype: str = "float32") -> Any:
    """The loop's own program (train.build_program) for registry model `name`: SGD momentum
    0.9 at a constant 0.01, cross-entropy, no input normalisation, computing in `dtype`
    (parameters stay float32)."""
    from jaxcnn import train
    from jaxcnn.tasks import classification

    config = train.default_config()
    config.model, config.optimizer, config.schedule = name, "momentum", "constant"
    config.dtype = dtype
    config.learning_rate, config.normalize, config.batch_size = 0.01, False, batch
    config.model_kwargs.update(model_kwargs or {})
    task = classification.make_task(train.resolve_platform(config),
                                    SyntheticData(shape, num_classes))
    return train.build_program(config, task, total_steps=1, steps_per_epoch=1)


# Dense bf16 tensor-core peaks (no sparsity) from the vendors' datasheets, TFLOP/s.
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def datasheet_peak_tflops(device_kind: str) -> float | None:
    """The datasheet dense bf16 peak of a GPU named `device_kind` (SXM parts), or None."""
    for name, peak in DATASHEET_BF16_TFLOPS.items():
        if name in device_kind.upper():
            return peak
    return None


def model_train_flops(name: str, shape: tuple[int, int, int], num_classes: int) -> float:
    """Model FLOPs of one training image: 6 x the forward MACs (jaxcnn.counting)."""
    from jaxcnn import counting, models

    rows = counting.summary(models.get_model(name, num_classes=num_classes), shape)
    return 6.0 * counting.total_macs(rows)


TOLERANCE = 0.05  # relative distance of the first loss from ln(classes)


def check_losses(losses: list[float], num_classes: int) -> dict[str, Any]:
    """The smoke criteria on a loss history: first near ln(classes), last below the first."""
    expected = math.log(num_classes)
    first, last = losses[0], losses[-1]
    initial_ok = math.isfinite(first) and abs(first - expected) <= TOLERANCE * expected
    decreased = math.isfinite(last) and last < first
    return {"ln_classes": expected, "initial_loss": first, "final_loss": last,
            "initial_ok": initial_ok, "decreased": decreased, "ok": initial_ok and decreased}


def split_times(loop_start: float, loop_end: float, compiles: list[tuple[float, float]],
                eval_windows: list[tuple[float, float]]) -> dict[str, float]:
    """compile / evaluation / training seconds of the loop from event end times and durations."""
    def in_eval(t: float) -> bool:
        return any(a <= t <= b for a, b in eval_windows)

    compile_s = sum(d for _, d in compiles)
    eval_compile = sum(d for t, d in compiles if in_eval(t))
    evaluation_s = sum(b - a for a, b in eval_windows) - eval_compile
    return {"compile_s": compile_s, "evaluation_s": evaluation_s,
            "training_s": loop_end - loop_start - compile_s - evaluation_s}


def add_mfu(result: dict[str, Any], flops_per_image: float, datasheet_tflops: float | None,
            measured_gflops: float | None) -> dict[str, Any]:
    """MFU of each framework's train rate: model FLOPs/s over the datasheet and the
    measured matmul peak."""
    result["model_train_gflop_per_image"] = flops_per_image / 1e9
    for entry in list(result.values()):
        if not isinstance(entry, dict) or not entry.get("train_img_s"):
            continue
        achieved = flops_per_image * entry["train_img_s"]
        entry["model_tflops"] = achieved / 1e12
        if datasheet_tflops:
            entry["mfu_datasheet"] = achieved / 1e12 / datasheet_tflops
        if measured_gflops:
            entry["mfu_measured"] = achieved / 1e9 / measured_gflops
    return result


def mfu_line(result: dict[str, Any]) -> str:
    """img/s, MFU (datasheet / measured matmul peak), compile s and peak device MiB per kind."""
    parts = []
    for kind, entry in result.items():
        if isinstance(entry, dict) and entry.get("train_img_s"):
            parts.append(
                f"{kind}: {entry['train_img_s']:.0f} img/s MFU "
                f"{100 * entry.get('mfu_datasheet', math.nan):.1f}% datasheet "
                f"{100 * entry.get('mfu_measured', math.nan):.1f}% measured, compile "
                f"{entry.get('compile_s', math.nan):.0f} s, peak "
                f"{entry.get('peak_device_mb') or math.nan:.0f} MiB")
    return "; ".join(parts)
