"""Print a registry model's per-layer table: activation shapes and sizes, #params, MACs.

    python -m experiments.summary --model=lenet5 --input=32,32,1 --num_classes=10
    python -m experiments.summary --model=resnet50   # its native 224x224x3 input, 1000 classes
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from experiments import common
from jaxcnn import counting, models

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet5", "Registered model name (see jaxcnn.models.list_models()).")
flags.DEFINE_list("input", None, "Input shape H,W,C (no batch dimension); default: the "
                  "model's native input (jaxcnn.models.model_info).")
flags.DEFINE_integer("num_classes", None, "Number of output classes; default: the model's.")


def parse_input(values: Sequence[str]) -> tuple[int, int, int]:
    """'H,W,C' flag values -> (H, W, C) positive ints."""
    try:
        shape = tuple(int(v) for v in values)
    except ValueError as error:
        raise app.UsageError(f"--input must be H,W,C integers; received {values}") from error
    if len(shape) != 3 or min(shape) < 1:
        raise app.UsageError(f"--input must be three positive integers H,W,C; received {values}")
    return shape


def render(model_name: str, input_shape: Sequence[int] | None = None,
           num_classes: int | None = None) -> str:
    """The summary table of `model_name` on one input of `input_shape`, plus totals (None:
    the model's native input size and default number of classes)."""
    info = models.model_info(model_name)
    input_shape = tuple(input_shape or info.input_shape)
    num_classes = num_classes or info.num_classes
    model = models.get_model(model_name, num_classes=num_classes)
    rows = counting.summary(model, input_shape)
    params, macs = counting.total_params(rows), counting.total_macs(rows)
    return "\n".join([
        f"{model_name} on {tuple(input_shape)} with {num_classes} classes",
        counting.format_table(rows),
        f"parameters: {params:,} ({params / 1e6:.2f} M)",
        f"multiply-accumulates: {macs:,} ({macs / 1e9:.3f} G)",
    ])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.quiet_logging()
    if FLAGS.model not in models.list_models():
        raise common.model_usage_error(FLAGS.model)
    try:
        shape = parse_input(FLAGS.input) if FLAGS.input else None
        print(render(FLAGS.model, shape, FLAGS.num_classes))
    except ValueError as error:  # unknown model, input too small: a usage error, not a crash
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    common.run(main)
