"""Parameter, multiplication (MAC) and activation counts, and per-layer summary tables."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _leaf_size(leaf: Any) -> int:
    return int(math.prod(np.shape(leaf)))


def count_params(variables: Mapping[str, Any] | Any) -> int:
    """Number of trainable parameters: the 'params' collection if present, else every leaf.

    BatchNorm running statistics ('batch_stats') are buffers, not parameters, as in
    torchvision's `sum(p.numel() for p in model.parameters())`.
    """
    if isinstance(variables, Mapping) and "params" in variables:
        variables = variables["params"]
    return sum(_leaf_size(leaf) for leaf in jax.tree_util.tree_leaves(variables))


def conv_params(f: int, in_channels: int, out_channels: int, bias: bool = True) -> int:
    """Parameters of an f x f convolution: f*f*C_in*C_out weights (+ C_out biases)."""
    return f * f * in_channels * out_channels + (out_channels if bias else 0)


def dense_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a fully connected layer: in*out weights (+ out biases)."""
    return in_features * out_features + (out_features if bias else 0)


def conv_macs(output_hw: int | tuple[int, int], f: int, in_channels: int, out_channels: int) -> int:
    """Multiplications of an f x f convolution: H_out*W_out*C_out*(f*f*C_in)."""
    h, w = (output_hw, output_hw) if isinstance(output_hw, int) else output_hw
    return h * w * out_channels * f * f * in_channels


def dense_macs(in_features: int, out_features: int) -> int:
    """Multiplications of a fully connected layer on one example."""
    return in_features * out_features


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of a summary table; shapes exclude the batch dimension."""

    name: str
    kind: str
    shape: tuple[int, ...]
    size: int
    params: int
    macs: int


def _output_array(output: Any) -> Any:
    """The activation a layer hands on (first leaf for tuple outputs)."""
    leaves = jax.tree_util.tree_leaves(output)
    return leaves[0] if leaves else None


def _subtree(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            return {}
        tree = tree[name]
    return tree


def _layer_macs(own_params: Any, shape: tuple[int, ...]) -> int:
    """MACs of a layer that owns a 'kernel': one kernel-sized dot per output position."""
    if not isinstance(own_params, Mapping) or "kernel" not in own_params:
        return 0
    kernel_shape = np.shape(own_params["kernel"])
    out_features = kernel_shape[-1]
    positions = math.prod(shape) // out_features if shape else 1
    return positions * math.prod(kernel_shape)


def summary(
    model: nn.Module, input_shape: Sequence[int], *, train: bool = False, **call_kwargs: Any
) -> list[LayerRow]:
    """Per-layer rows (input first) for `model` on one input of `input_shape` (H, W, C).

    Shapes are computed abstractly with `jax.eval_shape`: nothing is allocated. A row is
    emitted for every leaf module call (a module that calls no other module), in call order.
    """
    input_shape = tuple(int(d) for d in input_shape)
    calls: list[dict[str, Any]] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        entry = {"path": tuple(context.module.scope.path), "kind": type(context.module).__name__}
        calls.append(entry)
        output = next_fun(*args, **kwargs)
        array = _output_array(output)
        entry["shape"] = tuple(array.shape[1:]) if array is not None else ()
        return output

    def run(rng):
        x = jnp.zeros((1, *input_shape), jnp.float32)
        variables = model.init({"params": rng, "dropout": rng}, x, train=False, **call_kwargs)
        calls.clear()
        with nn.intercept_methods(record):
            model.apply(variables, x, train=train, rngs={"dropout": rng},
                        mutable=["batch_stats"] if train else False, **call_kwargs)
        return variables

    variables = jax.eval_shape(run, jax.random.key(0))
    params = variables.get("params", {})
    paths = [call["path"] for call in calls]
    rows = [LayerRow("input", "Input", input_shape, math.prod(input_shape), 0, 0)]
    seen: set[tuple[str, ...]] = set()
    for call in calls:
        path = call["path"]
        is_leaf = not any(len(other) > len(path) and other[: len(path)] == path for other in paths)
        if not is_leaf:
            continue
        own = _subtree(params, path)
        first_use = path not in seen
        seen.add(path)
        shape = call["shape"]
        rows.append(
            LayerRow(
                name="/".join(path) or type(model).__name__,
                kind=call["kind"],
                shape=shape,
                size=math.prod(shape) if shape else 0,
                params=count_params(own) if first_use else 0,
                macs=_layer_macs(own, shape),
            )
        )
    return rows


def total_params(rows: Sequence[LayerRow]) -> int:
    """Sum of the #params column."""
    return sum(row.params for row in rows)


def total_macs(rows: Sequence[LayerRow]) -> int:
    """Sum of the MACs column (multiply-accumulates for one example)."""
    return sum(row.macs for row in rows)


def format_table(rows: Sequence[LayerRow]) -> str:
    """A fixed-width text table: layer, activation shape, activation size, #params, MACs."""
    header = ("layer", "type", "activation shape", "activation size", "#params", "MACs")
    body = [
        (row.name, row.kind, str(row.shape), f"{row.size:,}", f"{row.params:,}", f"{row.macs:,}")
        for row in rows
    ]
    body.append(("total", "", "", "", f"{total_params(rows):,}", f"{total_macs(rows):,}"))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line):
        cells = [
            cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(header), rule, *[fmt(line) for line in body[:-1]], rule, fmt(body[-1])])
