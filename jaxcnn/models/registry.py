"""The one place a model name becomes a flax module, with each model's native input and classes.

Every registered family builds a module with these fields and methods (the trunk API):
  include_top: bool = True   # False: the trunk, returning the last feature map (N, h, w, C)
  conv_impl: str = "xla"     # jaxcnn.kernels name; the trainer chooses it (kernels.choose)
  trunk_info() -> TrunkInfo  # (stride, channels) of that last feature map
  feature_names() -> tuple   # the sown intermediate activations, in network order
The trunk has the full model's parameter names minus the classifier's, so the variables of
the full model (e.g. from jaxcnn.convert) apply to it unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry records about a model besides how to build it."""

    name: str
    input_shape: tuple[int, int, int]  # native (H, W, C) input, e.g. (224, 224, 3)
    num_classes: int  # default number of classes, e.g. 1000 for ImageNet models


class TrunkInfo(NamedTuple):
    """A trunk's last feature map: input side / stride = its side (adding `stride` pixels to
    the input adds one), with `channels` channels."""

    stride: int
    channels: int


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register(name: str, *, input_shape: tuple[int, int, int], num_classes: int
             ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder `fn(num_classes=..., **kw) -> nn.Module` under `name`,
    with its native (H, W, C) input and default number of classes."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape: expected (H, W, C) positive ints; received {input_shape}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        _INFO[name] = ModelInfo(name, tuple(input_shape), num_classes)
        return builder

    return decorate


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_BUILDERS)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def model_info(name: str) -> ModelInfo:
    """The registry's record of `name`: native input shape and default number of classes."""
    _check_name(name)
    return _INFO[name]


def get_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered model `name` with `num_classes` outputs (None: its default)."""
    _check_name(name)
    if num_classes is None:
        num_classes = _INFO[name].num_classes
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _BUILDERS[name](num_classes=num_classes, **kwargs)


def get_trunk(name: str, **kwargs: Any) -> nn.Module:
    """Model `name` without its classifier: returns the last feature map (N, h, w, C).

    Same parameter names as `get_model(name, **kwargs)` minus the classifier's."""
    if "include_top" in kwargs:
        raise ValueError("get_trunk: include_top is always False; received include_top="
                         f"{kwargs['include_top']!r}")
    return get_model(name, include_top=False, **kwargs)


def trunk_info(name: str, **kwargs: Any) -> TrunkInfo:
    """(stride, channels) of the last feature map of model `name` built with `kwargs`."""
    return get_trunk(name, **kwargs).trunk_info()


def check_feature_names(model: nn.Module, layers: Sequence[str]) -> tuple[str, ...]:
    """`layers` as a tuple, or a ValueError naming the unknown ones and the valid ones."""
    valid = model.feature_names()
    if isinstance(layers, str):
        layers = (layers,)
    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        raise ValueError(f"layers: unknown name(s) {unknown} for {type(model).__name__}; "
                         f"valid names: {', '.join(valid)}")
    return tuple(layers)


def features(model: nn.Module, variables: Any, x: jax.Array, layers: Sequence[str] | None = None,
             train: bool = False, rngs: Any = None) -> dict[str, jax.Array]:
    """The named intermediate activations of `model` on `x`: {name: array} for each of
    `layers` (default: all of model.feature_names()); eval mode unless `train` (then
    dropout needs rngs={"dropout": key})."""
    names = model.feature_names() if layers is None else check_feature_names(model, layers)
    mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    _, state = model.apply(variables, x, train=train, mutable=mutable, rngs=rngs)
    sown = state["intermediates"]
    return {name: sown[name][0] for name in names}
