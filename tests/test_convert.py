"""torchvision state dicts -> flax variables: the same networks built in plain torch agree."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcnn import convert, models

torch = pytest.importorskip("torch")
nn = torch.nn

from benchmarks import torch_models  # noqa: E402  (AlexNet, VGG: torchvision's layouts)

torch.set_grad_enabled(False)


# --- the torchvision layouts, written out in plain torch.nn (torchvision is not a dependency)


class TorchBlock(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        out = width * 4 if bottleneck else width
        specs = ([(cin, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)]
                 if bottleneck else [(cin, width, 3, stride), (width, width, 3, 1)])
        self.depth = len(specs)
        for i, (a, b, k, s) in enumerate(specs, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, k, s, padding=k // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(b))
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        y = x
        for i in range(1, self.depth + 1):
            y = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y))
            if i < self.depth:
                y = torch.relu(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + shortcut)


class TorchResNet(nn.Module):
    def __init__(self, sizes, bottleneck: bool, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for s, (blocks, width) in enumerate(zip(sizes, (64, 128, 256, 512), strict=True), start=1):
            stage = []
            for b in range(blocks):
                stage.append(TorchBlock(channels, width, 2 if s > 1 and b == 0 else 1, bottleneck))
                channels = width * 4 if bottleneck else width
            setattr(self, f"layer{s}", nn.Sequential(*stage))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(x.mean(dim=(2, 3)))


class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv(cin, c1)
        self.branch2 = nn.Sequential(BasicConv(cin, c3r), BasicConv(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv(cin, c5r), BasicConv(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv(cin, pool_proj))

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], 1)


class TorchAux(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = BasicConv(cin, 128)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))  # dropout off for the test


class TorchGoogLeNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = BasicConv(3, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv(64, 64)
        self.conv3 = BasicConv(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        channels = 192
        for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
            spec = models.inception.BLOCKS[f"inception{name}"]
            setattr(self, f"inception{name}", TorchInception(channels, *spec))
            channels = spec[0] + spec[2] + spec[4] + spec[5]
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux1 = TorchAux(512, num_classes)
        self.aux2 = TorchAux(528, num_classes)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x)
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(x.mean(dim=(2, 3))), aux1, aux2


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
    _compare("resnet18", _randomize(TorchResNet((2, 2, 2, 2), False, 10), 2), side=64)


def test_resnet50_matches_torch():
    _compare("resnet50", _randomize(TorchResNet((3, 4, 6, 3), True, 10), 3), side=64)


def test_googlenet_bn_matches_torch_including_aux_heads():
    torch_model = _randomize(TorchGoogLeNet(10), 4)
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
    torch_model = _randomize(TorchResNet((2, 2, 2, 2), False, 3), 5)
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
    return {k: v.numpy() for k, v in TorchResNet((2, 2, 2, 2), False, 4).state_dict().items()}


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
