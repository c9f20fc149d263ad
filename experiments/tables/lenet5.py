"""Table 1: the lecture's LeNet-5 table (layer shapes, sizes, parameters, multiplications)."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.tables.render import Column, Table, counting_notes
from jaxcnn import counting, models

LENET5_LABELS = {"input": "Input", "conv1": "CONV1", "pool1": "POOL1", "conv2": "CONV2",
                 "pool2": "POOL2", "fc3": "FC3", "fc4": "FC4", "fc5": "Softmax"}


def lenet5_rows(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> list[dict]:
    """The lecture's LeNet-5 rows: layer label, module, activation shape/size, #params, MACs."""
    model = models.get_model("lenet5", num_classes=num_classes)
    return [
        {"layer": LENET5_LABELS.get(row.name, row.name), "module": row.name, "shape": row.shape,
         "size": row.size, "params": row.params, "macs": row.macs}
        for row in counting.summary(model, input_shape)
    ]


def lenet5_table() -> Table:
    """The lecture's LeNet-5 table on a 32x32x3 input (10 classes)."""
    rows = lenet5_rows()
    columns = (Column("layer", "layer (lecture)"), Column("module", "module"),
               Column("shape", "activation shape"), Column("size", "activation size"),
               Column("params", "# parameters"), Column("macs", "multiplications"))
    total = sum(row["params"] for row in rows)
    return Table("lenet5", "LeNet-5 on a 32x32x3 input (registry model `lenet5`, 10 classes)",
                 columns, tuple(rows), (f"total parameters: {total:,}", *counting_notes()))


def build(budget: str, runs_dir: str | None = None, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table (exact counts: budget, runs and data do not change it)."""
    del budget, runs_dir, overrides, data_dir
    return lenet5_table()
