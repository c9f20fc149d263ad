"""The one place a model name becomes a flax module."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder `fn(num_classes=..., **kw) -> nn.Module` under `name`."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build the registered model `name` with `num_classes` outputs."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _BUILDERS[name](num_classes=num_classes, **kwargs)
