"""Table 2: the cost of Inception's 1x1 bottlenecks, the lecture's example and GoogLeNet's."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.tables.render import Column, Table, counting_notes
from jaxcnn import counting, models

# The lecture's example: 28x28x192 -> 28x28x32 by a 5x5 conv, or a 1x1 to 16 channels first.
LECTURE_BOTTLENECK = {"side": 28, "in_channels": 192, "reduce": 16, "out_channels": 32, "f": 5}


def bottleneck_row(where: str, branch: str, side: int | tuple[int, int], f: int,
                   in_channels: int, reduce: int, out_channels: int,
                   reduce_macs: int | None = None, conv_macs: int | None = None) -> dict:
    """Multiplications of a direct f x f conv vs a 1x1 reduce + f x f conv (same output)."""
    hw = (side, side) if isinstance(side, int) else tuple(side)
    reduce_macs = counting.conv_macs(hw, 1, in_channels, reduce) if reduce_macs is None \
        else reduce_macs
    conv_macs = counting.conv_macs(hw, f, reduce, out_channels) if conv_macs is None \
        else conv_macs
    direct = counting.conv_macs(hw, f, in_channels, out_channels)
    return {"where": where, "branch": branch, "output": f"{hw[0]}x{hw[1]}x{out_channels}",
            "in_channels": in_channels, "reduce": reduce, "out_channels": out_channels,
            "direct_macs": direct, "reduce_macs": reduce_macs, "conv_macs": conv_macs,
            "bottleneck_macs": reduce_macs + conv_macs,
            "saving": direct / (reduce_macs + conv_macs)}


def inception_cost_rows(model_name: str = "googlenet", side: int = 224) -> list[dict]:
    """The lecture's example, then every inception block's 3x3 and 5x5 branch of `model_name`.

    Channel counts come from the model's parameter shapes and output sizes and the used MACs
    from `counting.summary`; the direct conv's MACs from `counting.conv_macs`.
    """
    ex = LECTURE_BOTTLENECK
    rows = [bottleneck_row("lecture example", f"{ex['f']}x{ex['f']}", ex["side"], ex["f"],
                           ex["in_channels"], ex["reduce"], ex["out_channels"])]
    model = models.get_model(model_name, num_classes=1000)
    x = jnp.zeros((1, side, side, 3), jnp.float32)
    params = jax.eval_shape(lambda key: model.init(key, x, train=False),
                            jax.random.key(0))["params"]
    summary = {row.name: row for row in counting.summary(model, (side, side, 3))}
    for name in summary:
        parts = name.split("/")
        if len(parts) != 3 or parts[1] not in ("branch2_1", "branch3_1") or parts[2] != "conv":
            continue
        block, conv = parts[0], parts[1]
        reduce_name = conv[:-1] + "0"
        reduce_kernel = params[block][reduce_name]["conv"]["kernel"].shape  # (1, 1, C_in, red)
        kernel = params[block][conv]["conv"]["kernel"].shape  # (f, f, red, C_out)
        used = summary[name]
        rows.append(bottleneck_row(
            block, f"{kernel[0]}x{kernel[1]}", used.shape[:2], kernel[0], reduce_kernel[2],
            reduce_kernel[3], kernel[3], summary[f"{block}/{reduce_name}/conv"].macs, used.macs))
    return rows


def inception_cost_table(model_name: str = "googlenet") -> Table:
    """Direct conv vs 1x1 bottleneck multiplications: the lecture's example and GoogLeNet's."""
    rows = inception_cost_rows(model_name)
    columns = (Column("where", "where"), Column("branch", "branch"),
               Column("output", "output"), Column("in_channels", "C_in"),
               Column("reduce", "1x1 reduce to"), Column("direct_macs", "direct conv MACs"),
               Column("reduce_macs", "1x1 reduce MACs"), Column("conv_macs", "conv MACs"),
               Column("bottleneck_macs", "reduce + conv MACs"),
               Column("saving", "saving (x)", ".1f"))
    blocks = rows[1:]
    direct = sum(row["direct_macs"] for row in blocks)
    used = sum(row["bottleneck_macs"] for row in blocks)
    notes = (
        "direct conv: the branch's f x f conv applied to the block's C_in input channels; "
        "reduce + conv: what the model computes (MACs per image, biases not counted)",
        f"all {len(blocks)} branches of `{model_name}` at 224x224: direct {direct:,} vs used "
        f"{used:,} multiplications ({direct / used:.1f}x)",
        *counting_notes())
    return Table("inception_cost", f"1x1 bottlenecks: the lecture's example and every "
                 f"inception block of `{model_name}`", columns, tuple(rows), notes)


def build(budget: str, runs_dir: str | None = None, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table for GoogLeNet (exact counts: budget, runs and data do not change it)."""
    del budget, runs_dir, overrides, data_dir
    return inception_cost_table()
