"""torchvision state dicts -> flax variables: the same networks built in plain torch agree."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcnn import convert, models

torch = pytest.importorskip("torch")
nn = torch.nn

from benchmarks import torch_models  # noqa: E402  (the one torch reference, torchvision names)


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only, without leaking torch's global grad mode into other test modules."""
    with torch.no_grad():
        yield




def _resnet(depth: int, num_classes: int) -> nn.Module:
    """torchvision's ImageNet ResNet-`depth` (the benchmarks' reference, torchvision names)."""
    return torch_models.build(f"resnet{depth}", num_classes, (224, 224, 3))


# --- helpers


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, so that every converted tensor matters."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _assert_close(got, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4 * scale)


def _compare(name: str, torch_model: nn.Module, side: int, **model_kwargs) -> dict:
    """Convert `torch_model`'s state dict; check flax logits match torch's in eval mode."""
    x = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    expected = torch_model(torch.from_numpy(x))
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    variables = convert.from_torchvision(name, torch_model.state_dict())
    flax_model = models.get_model(name, num_classes=expected.shape[1], **model_kwargs)
    got = jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(
        variables, x.transpose(0, 2, 3, 1))
    _assert_close(got, expected)
    return variables


# --- tests


def test_alexnet_matches_torch():
    # 127 -> 3x3 features, which the 6x6 adaptive pool spreads unevenly: the NCHW->NHWC
    # flatten permutation of fc6 and the adaptive bins both matter.
    _compare("alexnet", _randomize(torch_models.AlexNet(10, 3), 0), side=127)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg11_matches_torch(batch_norm):
    name = "vgg11_bn" if batch_norm else "vgg11"
    _compare(name, _randomize(torch_models.VGG(11, batch_norm, 10, 3), 1), side=64)


def test_resnet18_matches_torch():
    _compare("resnet18", _randomize(_resnet(18, 10), 2), side=64)


def test_resnet50_matches_torch():
    _compare("resnet50", _randomize(_resnet(50, 10), 3), side=64)


def test_googlenet_bn_matches_torch_including_aux_heads():
    torch_model = _randomize(torch_models.GoogLeNet(True, 10, 3, aux_logits=True), 4)
    variables = _compare("googlenet_bn", torch_model, side=64, aux_logits=True)
    # The aux heads only run in train mode; check each head on its own in eval mode, on a
    # 5x5 map so that the 4x4 adaptive pool and fc1's NCHW->NHWC permutation both matter.
    for name, channels in (("aux1", 512), ("aux2", 528)):
        x = np.random.default_rng(1).normal(size=(2, channels, 5, 5)).astype(np.float32)
        expected = getattr(torch_model, name)(torch.from_numpy(x)).numpy()
        head = models.InceptionAux(10, batch_norm=True, paper_pool=False)
        head_variables = {collection: variables[collection][name] for collection in variables}
        got = jax.jit(lambda v, x, head=head: head.apply(v, x, train=False))(
            head_variables, x.transpose(0, 2, 3, 1))
        _assert_close(got, expected)


def test_from_a_saved_pth_file(tmp_path):
    torch_model = _randomize(_resnet(18, 3), 5)
    path = tmp_path / "resnet18.pth"
    torch.save(torch_model.state_dict(), path)
    variables = convert.from_torchvision("resnet18", path)
    assert variables["params"]["fc"]["kernel"].shape == (512, 3)
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer2_0"]["downsample_1"]["var"],
        torch_model.layer2[0].downsample[1].running_var.numpy(),
    )
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"],
        torch_model.conv1.weight.numpy().transpose(2, 3, 1, 0),
    )


@pytest.fixture(scope="module")
def resnet18_state():
    return {k: v.numpy() for k, v in _resnet(18, 4).state_dict().items()}


def test_missing_key_is_named(resnet18_state):
    state = dict(resnet18_state)
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing key 'layer3\.1\.bn2\.running_var'"):
        convert.from_torchvision("resnet18", state)


def test_unexpected_key_is_named(resnet18_state):
    state = {**resnet18_state, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match=r"unexpected keys .*layer5\.0\.conv1\.weight"):
        convert.from_torchvision("resnet18", state)


def test_shape_mismatch_is_named(resnet18_state):
    state = {**resnet18_state, "layer1.0.conv2.weight": np.zeros((64, 64, 1, 1))}
    with pytest.raises(ValueError, match=r"layer1\.0\.conv2\.weight.*\(64, 64, 3, 3\)"):
        convert.from_torchvision("resnet18", state)


def test_unsupported_name():
    with pytest.raises(ValueError, match="unsupported model 'lenet5'"):
        convert.from_torchvision("lenet5", {})


@pytest.mark.parametrize("n,f,s,p", [(13, 3, 2, 0), (14, 3, 2, 0), (7, 2, 2, 0), (5, 3, 2, 1),
                                     (6, 3, 1, 1), (2, 3, 2, 0)])
def test_ceil_mode_max_pool_matches_torch(n, f, s, p):
    x = np.random.default_rng(0).normal(size=(1, 2, n, n + 1)).astype(np.float32)
    pool = models.MaxPool(f, s, ((p, p), (p, p)), ceil_mode=True)
    got = np.asarray(pool.apply({}, x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    expected = nn.functional.max_pool2d(torch.from_numpy(x), f, s, p, ceil_mode=True).numpy()
    np.testing.assert_array_equal(got, expected)
