"""Pretrained torchvision weights (state dicts) into flax variables for the registry models.

torch stores conv weights OIHW and linear weights (out, in); flax wants HWIO and (in, out).
torch flattens NCHW feature maps before the first fully connected layer while our models
flatten NHWC, so that layer's input rows are permuted from (C, H, W) order to (H, W, C).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcnn.models import get_model
from jaxcnn.models.vgg import CONFIGS as VGG_CONFIGS

SUPPORTED = (
    "alexnet",
    *(f"vgg{d}{bn}" for d in sorted(VGG_CONFIGS) for bn in ("", "_bn")),
    *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
    "googlenet_bn",
)
# Any input size the models accept: only the variables' shapes are needed.
_INIT_SHAPE = (1, 224, 224, 3)

StateDict = Mapping[str, Any]


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like as a float32 numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def load_state_dict(state_dict: StateDict | str | os.PathLike) -> dict[str, np.ndarray]:
    """A state dict (of tensors or arrays, or a path to a saved .pth) as float32 numpy arrays.

    `num_batches_tracked` counters are dropped (flax BatchNorm has no such statistic).
    """
    if isinstance(state_dict, (str, os.PathLike)):
        import torch  # lazily: only needed for files

        state_dict = torch.load(os.fspath(state_dict), map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"state_dict must be a mapping of names to arrays or a path; received "
            f"{type(state_dict).__name__}"
        )
    return {
        key: _to_numpy(value)
        for key, value in state_dict.items()
        if not key.endswith("num_batches_tracked")
    }


def _split_index(component: str) -> str:
    """Flax module name 'layer1_0' -> torch's 'layer1.0' (Sequential children are numbered)."""
    match = re.fullmatch(r"(.+)_(\d+)", component)
    return f"{match.group(1)}.{match.group(2)}" if match else component


def _generic_prefix(path: tuple[str, ...]) -> str:
    return ".".join(_split_index(component) for component in path)


def _alexnet_names() -> dict[str, str]:
    convs = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10}
    names = {name: f"features.{index}" for name, index in convs.items()}
    names.update({"fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"})
    return names


def _vgg_names(depth: int, batch_norm: bool) -> dict[str, str]:
    names, index = {}, 0
    for s, stage in enumerate(VGG_CONFIGS[depth], start=1):
        for i in range(1, len(stage) + 1):
            names[f"conv{s}_{i}"] = f"features.{index}"
            if batch_norm:
                names[f"bn{s}_{i}"] = f"features.{index + 1}"
            index += 3 if batch_norm else 2  # conv (+ bn) + relu
        index += 1  # max pool
    names.update({"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"})
    return names


def _family(name: str) -> tuple[Callable[[tuple[str, ...]], str], dict[str, tuple], str]:
    """(flax module path -> torch prefix, {flax path: torch (C, H, W) before flatten}, fc key)."""
    if name == "alexnet":
        names = _alexnet_names()
        return (lambda path: names[path[0]]), {"fc6": (256, 6, 6)}, "classifier.6.weight"
    if name.startswith("vgg"):
        names = _vgg_names(int(name[3:].removesuffix("_bn")), name.endswith("_bn"))
        return (lambda path: names[path[0]]), {"fc6": (512, 7, 7)}, "classifier.6.weight"
    if name.startswith("resnet"):
        return _generic_prefix, {}, "fc.weight"
    flatten = {"aux1/fc1": (128, 4, 4), "aux2/fc1": (128, 4, 4)}
    return _generic_prefix, flatten, "fc.weight"


def _convert_leaf(
    key: str, value: np.ndarray, leaf: str, shape: tuple[int, ...], chw: tuple | None
) -> np.ndarray:
    """One torch tensor in flax layout, checked against the flax `shape`."""
    if leaf == "kernel" and len(shape) == 4:
        expected_torch = (shape[3], shape[2], shape[0], shape[1])
    elif leaf == "kernel":
        expected_torch = (shape[1], shape[0])
    else:
        expected_torch = shape
    if tuple(value.shape) != expected_torch:
        raise ValueError(
            f"state_dict[{key!r}]: expected shape {expected_torch} (for flax {leaf} "
            f"{shape}); received {tuple(value.shape)}"
        )
    if leaf == "kernel" and len(shape) == 4:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf == "kernel" and chw is not None:
        out = value.shape[0]
        if int(np.prod(chw)) != value.shape[1]:
            raise ValueError(f"state_dict[{key!r}]: {value.shape[1]} inputs are not C*H*W={chw}")
        return value.reshape(out, *chw).transpose(2, 3, 1, 0).reshape(-1, out)  # CHW -> HWC
    if leaf == "kernel":
        return value.T
    return value


# flax (collection, leaf name) -> torch parameter/buffer suffix
_TORCH_SUFFIX = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def from_torchvision(name: str, state_dict: StateDict | str | os.PathLike) -> dict[str, Any]:
    """Flax variables {'params', 'batch_stats'} for registry model `name` from torchvision's
    state dict (a mapping of tensors/arrays, or a path to a .pth file).

    The number of classes is read from the final fc layer; for googlenet_bn, auxiliary
    heads are converted (and the model must be built with aux_logits=True) when the state
    dict has aux1/aux2 weights. Missing or unexpected keys and shape mismatches raise a
    ValueError naming the key.
    """
    if name not in SUPPORTED:
        raise ValueError(f"from_torchvision: unsupported model {name!r}; supported: {SUPPORTED}")
    tensors = load_state_dict(state_dict)
    to_prefix, flatten, fc_key = _family(name)
    if fc_key not in tensors:
        raise ValueError(f"state_dict is missing key {fc_key!r} (the final classifier weight)")
    kwargs = {}
    if name == "googlenet_bn":
        kwargs["aux_logits"] = any(key.startswith(("aux1.", "aux2.")) for key in tensors)
    model = get_model(name, num_classes=int(tensors[fc_key].shape[0]), **kwargs)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(_INIT_SHAPE, jnp.float32), train=False)
    )
    used: set[str] = set()
    variables: dict[str, Any] = {}
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(shapes.get(collection, {}))
        converted = {}
        for path, spec in flat.items():
            module, leaf = path[:-1], path[-1]
            key = f"{to_prefix(module)}.{_TORCH_SUFFIX[(collection, leaf)]}"
            if key not in tensors:
                raise ValueError(
                    f"state_dict is missing key {key!r} (for flax {collection} "
                    f"{'/'.join(path)}, shape {tuple(spec.shape)})"
                )
            chw = flatten.get("/".join(module))
            converted[path] = jnp.asarray(
                _convert_leaf(key, tensors[key], leaf, tuple(spec.shape), chw)
            )
            used.add(key)
        if converted:
            variables[collection] = traverse_util.unflatten_dict(converted)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise ValueError(f"state_dict has unexpected keys for {name!r}: {unexpected}")
    return variables


def vgg_convs_from_torchvision(
    state_dict: StateDict | str | os.PathLike,
) -> tuple[int, dict[str, dict[str, jax.Array]]]:
    """(depth, {conv{s}_{i}: {kernel HWIO, bias}}) from a plain torchvision VGG state dict,
    whole or only its `features.*` entries: the registry VGG's convolution params.

    The depth (11, 13, 16 or 19) is read from the layout of the conv layers; any other
    network (VGG with BatchNorm included) raises a ValueError saying what was found.
    """
    tensors = load_state_dict(state_dict)
    found = sorted(
        int(key.split(".")[1]) for key, value in tensors.items()
        if re.fullmatch(r"features\.\d+\.weight", key) and value.ndim == 4
    )
    for depth, stages in VGG_CONFIGS.items():
        names = {flax: torch for flax, torch in _vgg_names(depth, False).items()
                 if flax.startswith("conv")}
        if sorted(int(torch.split(".")[1]) for torch in names.values()) != found:
            continue
        params, in_channels = {}, 3
        widths = [width for stage in stages for width in stage]
        for (flax, torch), width in zip(names.items(), widths):
            kernel, bias = f"{torch}.weight", f"{torch}.bias"
            if bias not in tensors:
                raise ValueError(f"state_dict is missing key {bias!r} (for {flax}/bias)")
            params[flax] = {
                "kernel": jnp.asarray(_convert_leaf(kernel, tensors[kernel], "kernel",
                                                    (3, 3, in_channels, width), None)),
                "bias": jnp.asarray(_convert_leaf(bias, tensors[bias], "bias", (width,), None)),
            }
            in_channels = width
        return depth, params
    raise ValueError(
        "state_dict is not a plain torchvision VGG (11/13/16/19 without BatchNorm): its 4-D "
        f"features.*.weight entries sit at indices {found or 'none'} (first keys: "
        f"{sorted(tensors)[:4]})"
    )
