"""A table's data (`Table`) and its three renderings: markdown, CSV and, where it has a plot, PNG.

`write_table` writes all three into a directory; `machine_description` is the line every table
carries about where it was computed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Column:
    """A column: `key` in the row dicts and the CSV header, `label` in markdown, cell format."""

    key: str
    label: str
    fmt: str = ""  # format spec for markdown cells ("" -> ints with commas, floats .2f)


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows (dicts keyed by column key) with a title, notes (what ran where) and plot data.

    `plot` is None, "curves" (`series`: label -> ((x, y), ...) lines) or "scatter" (`series`:
    label -> ((x, y),) one labelled point each, log-log axes); `axes` are the axis labels.
    """

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()
    plot: str | None = None
    series: Mapping[str, tuple[tuple[float, float], ...]] = dataclasses.field(
        default_factory=dict)
    axes: tuple[str, str] = ("", "")


def machine_description() -> str:
    """Processor, visible CPU cores and JAX devices of this process, in one line."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    devices = jax.devices()
    kinds = sorted({d.device_kind if d.device_kind == d.platform else
                    f"{d.platform} {d.device_kind}" for d in devices})
    return (f"{platform.processor() or platform.machine()}, {cores} CPU cores, "
            f"{len(devices)} JAX device(s): {', '.join(kinds)}, jax {jax.__version__}")


def counting_notes() -> tuple[str, ...]:
    """The notes of a table counted from model definitions: how, and on which machine."""
    return ("computed from the model definitions with `jax.eval_shape` (no data, no training)",
            f"machine: {machine_description()}")


# ---------------------------------------------------------------------------------------------
# Markdown and CSV


def _cell(value: Any, fmt: str = "") -> str:
    """A markdown cell: None -> an em dash, ints with thousands separators, floats .2f."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if fmt:
        return format(value, fmt)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):,.2f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown: a heading, the grid, then the notes as a bullet list."""
    labels = [column.label for column in table.columns]
    align = []
    for column in table.columns:
        numeric = any(_is_number(row.get(column.key)) for row in table.rows)
        align.append("---:" if numeric else "---")
    lines = [f"### {table.title}", "", "| " + " | ".join(labels) + " |",
             "|" + "|".join(align) + "|"]
    for row in table.rows:
        cells = [_cell(row.get(column.key), column.fmt) for column in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    return value


def to_csv(table: Table) -> str:
    """The rows as CSV with the column keys as header (tuples as 28x28x6, None as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.key for column in table.columns])
    for row in table.rows:
        writer.writerow([_csv_value(row.get(column.key)) for column in table.columns])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# PNG


def plot_table(table: Table, path: str) -> None:
    """Write the table's plot (curves or labelled log-log scatter) as a PNG at `path`."""
    if table.plot not in ("curves", "scatter"):
        raise ValueError(f"table {table.name!r} has plot={table.plot!r}; expected curves/scatter")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    # Curves named like "plain-20" / "residual-20" share a colour per suffix; "plain" dashes.
    groups = list(dict.fromkeys(label.rsplit("-", 1)[-1] for label in table.series))
    for label, points in table.series.items():
        xs, ys = zip(*points) if points else ((), ())
        if table.plot == "curves":
            color = f"C{groups.index(label.rsplit('-', 1)[-1]) % 10}"
            ax.plot(xs, ys, label=label, color=color,
                    linestyle="--" if "plain" in label else "-")
        else:
            ax.scatter(xs, ys, s=18)
    if table.plot == "scatter":
        for (x, y), names in _merge_close_points(table.series).items():
            ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.legend()
    ax.set_xlabel(table.axes[0])
    ax.set_ylabel(table.axes[1])
    ax.set_title(table.title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _merge_close_points(series: Mapping[str, Sequence[tuple[float, float]]],
                        tolerance: float = 0.03) -> dict[tuple[float, float], list[str]]:
    """Labels of points within `tolerance` (relative, both axes) of each other, merged."""
    merged: dict[tuple[float, float], list[str]] = {}
    for label, points in series.items():
        for x, y in points:
            for (mx, my), names in merged.items():
                if abs(x - mx) <= tolerance * abs(mx) and abs(y - my) <= tolerance * abs(my):
                    names.append(label)
                    break
            else:
                merged[(x, y)] = [label]
    return merged


def write_table(table: Table, directory: str) -> list[str]:
    """Write NAME.md, NAME.csv and (if the table has a plot) NAME.png; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for suffix, text in (("md", to_markdown(table)), ("csv", to_csv(table))):
        path = os.path.join(directory, f"{table.name}.{suffix}")
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    if table.plot:
        path = os.path.join(directory, f"{table.name}.png")
        plot_table(table, path)
        paths.append(path)
    return paths
