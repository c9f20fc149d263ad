"""jaxcnn: the classic convolutional networks in JAX/Flax.

`import jaxcnn` is cheap: each subpackage (`jaxcnn.models`, `jaxcnn.train`, ...) is imported
on first attribute access. A new subpackage is exposed by adding its name to SUBPACKAGES.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

SUBPACKAGES = (
    "convert",
    "counting",
    "data",
    "detection",
    "faces",
    "inspection",
    "kernels",
    "losses",
    "models",
    "ops",
    "style",
    "tasks",
    "train",
    "weights",
)
__all__ = ["__version__", *SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBPACKAGES})
