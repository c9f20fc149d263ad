"""The one PyTorch reference of the registry's networks (NCHW), for the benchmarks and tests.

`build(name, num_classes, image_shape)` mirrors `jaxcnn.models.get_model(name, ...)`: the
same layers, widths, paddings, pooling modes and dropout, so parameter counts agree. Module
and state-dict names are torchvision's (AlexNet, VGG, ResNet, GoogLeNet), so
`jaxcnn.convert.from_torchvision` loads their state dicts (tests/test_convert.py).
torchvision itself is not a dependency.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LeNet5(nn.Module):
    """CONV(5,6)-MAXPOOL-CONV(5,16)-MAXPOOL-FC120-FC84-FC, ReLU (the registry's default)."""

    def __init__(self, num_classes: int, in_channels: int, side: tuple[int, int] = (32, 32)):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(in_channels, 6, 5), nn.Conv2d(6, 16, 5)
        h, w = (((n - 4) // 2 - 4) // 2 for n in side)
        self.fc3, self.fc4 = nn.Linear(16 * h * w, 120), nn.Linear(120, 84)
        self.fc5 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc3(torch.flatten(x, 1)))
        return self.fc5(torch.relu(self.fc4(x)))


class AlexNet(nn.Module):
    """torchvision's AlexNet."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 36, 4096), nn.ReLU(),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_STAGES = {
    11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4),
}


class VGG(nn.Module):
    """torchvision's VGG-11/13/16/19, optionally with BatchNorm after every conv."""

    def __init__(self, depth: int, batch_norm: bool, num_classes: int, in_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for convs, width in zip(VGG_STAGES[depth], (64, 128, 256, 512, 512)):
            for _ in range(convs):
                layers.append(nn.Conv2d(channels, width, 3, padding=1))
                layers += [nn.BatchNorm2d(width), nn.ReLU()] if batch_norm else [nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock / Bottleneck (conv1, bn1, conv2, bn2[, conv3, bn3],
    downsample.0/1), or a zero-padding shortcut (no downsample) for He et al.'s CIFAR nets."""

    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool, zeropad: bool):
        super().__init__()
        out = width * 4 if bottleneck else width
        specs = ([(cin, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)]
                 if bottleneck else [(cin, width, 3, stride), (width, width, 3, 1)])
        self.depth = len(specs)
        for i, (a, b, k, s) in enumerate(specs, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, k, s, k // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(b))
        self.stride, self.extra = stride, out - cin
        self.downsample = None
        if (stride != 1 or cin != out) and not zeropad:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i in range(1, self.depth + 1):
            y = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y))
            if i < self.depth:
                y = torch.relu(y)
        if self.downsample is not None:
            x = self.downsample(x)
        elif self.stride != 1 or self.extra:
            x = x[:, :, ::self.stride, ::self.stride]
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))
        return torch.relu(y + x)


RESNET_DEPTHS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True),
                 101: ((3, 4, 23, 3), True), 152: ((3, 8, 36, 3), True)}


class ResNet(nn.Module):
    """torchvision's ResNets (conv1, bn1, maxpool, layer1..layer4, fc; or the 3x3/1 CIFAR stem
    without max pool) and He et al.'s CIFAR ResNets (3 stages of 16/32/64, zero-padding)."""

    def __init__(self, sizes, bottleneck: bool, widths, cifar_stem: bool, zeropad: bool,
                 num_classes: int, in_channels: int):
        super().__init__()
        self.conv1 = (nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False) if cifar_stem
                      else nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, 2, 1)
        channels = widths[0]
        for s, (blocks, width) in enumerate(zip(sizes, widths, strict=True), start=1):
            stage = []
            for b in range(blocks):
                stride = 2 if s > 1 and b == 0 else 1
                stage.append(ResidualBlock(channels, width, stride, bottleneck, zeropad))
                channels = width * 4 if bottleneck else width
            setattr(self, f"layer{s}", nn.Sequential(*stage))
        self.num_stages = len(sizes)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def local_response_norm(x: torch.Tensor) -> torch.Tensor:
    """LRN(size 5, alpha 1e-4, beta 0.75, k 1), as the registry's paper GoogLeNet."""
    return nn.functional.local_response_norm(x, 5, 1e-4, 0.75, 1.0)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d (conv without bias, bn eps 1e-3, ReLU), or the paper's conv
    with bias + ReLU (no bn)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """branch1 1x1 | branch2 1x1->3x3 | branch3 1x1->5x5 (3x3 in torchvision) | branch4
    maxpool->1x1, concatenated on channels."""

    def __init__(self, cin: int, spec, batch_norm: bool, five: int):
        super().__init__()
        c1, c3r, c3, c5r, c5, pool = spec
        self.branch1 = BasicConv2d(cin, c1, batch_norm=batch_norm)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, batch_norm=batch_norm),
                                     BasicConv2d(c3r, c3, 3, padding=1, batch_norm=batch_norm))
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, c5r, batch_norm=batch_norm),
            BasicConv2d(c5r, c5, five, padding=five // 2, batch_norm=batch_norm))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(cin, pool, batch_norm=batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], 1)


class InceptionAux(nn.Module):
    """Auxiliary head: avg pool to 4x4 (the paper's 5x5/3, or torchvision's adaptive), conv
    (128), fc1 (1024) + ReLU, dropout 0.7, fc2."""

    def __init__(self, cin: int, num_classes: int, batch_norm: bool):
        super().__init__()
        self.paper_pool = not batch_norm
        self.conv = BasicConv2d(cin, 128, batch_norm=batch_norm)
        self.fc1, self.fc2 = nn.Linear(2048, 1024), nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (nn.functional.avg_pool2d(x, 5, 3) if self.paper_pool
             else nn.functional.adaptive_avg_pool2d(x, (4, 4)))
        x = torch.relu(self.fc1(torch.flatten(self.conv(x), 1)))
        return self.fc2(self.dropout(x))


class GoogLeNet(nn.Module):
    """The paper's GoogLeNet (biases, LRN, 5x5, dropout 0.4) or torchvision's (BN, 3x3, 0.2),
    with torchvision's names; with aux_logits, forward returns (logits, aux1, aux2)."""

    def __init__(self, batch_norm: bool, num_classes: int, in_channels: int,
                 aux_logits: bool = False):
        super().__init__()
        from jaxcnn.models.inception import AUX_AFTER, BLOCKS, POOL_AFTER

        five, self.lrn = (3, False) if batch_norm else (5, True)
        self.conv1 = BasicConv2d(in_channels, 64, 7, 2, 3, batch_norm)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, batch_norm=batch_norm)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, batch_norm=batch_norm)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.order: list[str] = []
        channels = 192
        for name, spec in BLOCKS.items():
            setattr(self, name, Inception(channels, spec, batch_norm, five))
            self.order.append(name)
            channels = spec[0] + spec[2] + spec[4] + spec[5]
            if name in AUX_AFTER and aux_logits:
                setattr(self, AUX_AFTER[name], InceptionAux(channels, num_classes, batch_norm))
                self.order.append(AUX_AFTER[name])
            if name in POOL_AFTER:
                pool_name, window = POOL_AFTER[name]
                setattr(self, pool_name, nn.MaxPool2d(window, 2, ceil_mode=True))
                self.order.append(pool_name)
        self.aux_logits = aux_logits
        self.dropout = nn.Dropout(0.2 if batch_norm else 0.4)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor):
        x = self.maxpool1(self.conv1(x))
        if self.lrn:
            x = local_response_norm(x)
        x = self.conv3(self.conv2(x))
        if self.lrn:
            x = local_response_norm(x)
        x = self.maxpool2(x)
        aux = []
        for name in self.order:
            if name.startswith("aux"):
                aux.append(getattr(self, name)(x))
            else:
                x = getattr(self, name)(x)
        logits = self.fc(self.dropout(x.mean(dim=(2, 3))))
        return (logits, *aux) if self.aux_logits else logits


Builder = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> module


def _builders() -> dict[str, Builder]:
    builders: dict[str, Builder] = {
        "alexnet": AlexNet,
        "googlenet": lambda k, c: GoogLeNet(False, k, c),
        "googlenet_bn": lambda k, c: GoogLeNet(True, k, c),
    }
    for depth in VGG_STAGES:
        builders[f"vgg{depth}"] = lambda k, c, d=depth: VGG(d, False, k, c)
        builders[f"vgg{depth}_bn"] = lambda k, c, d=depth: VGG(d, True, k, c)
    for depth, (sizes, bottleneck) in RESNET_DEPTHS.items():
        for cifar in (False, True):
            name = f"resnet{depth}" + ("_cifar" if cifar else "")
            builders[name] = lambda k, c, s=sizes, b=bottleneck, cf=cifar: ResNet(
                s, b, (64, 128, 256, 512), cf, False, k, c)
    for depth in (20, 32, 44, 56, 110):
        n = (depth - 2) // 6
        builders[f"resnet{depth}_cifar"] = lambda k, c, n=n: ResNet(
            (n, n, n), False, (16, 32, 64), True, True, k, c)
    return builders


BUILDERS = {"lenet5": LeNet5, **_builders()}


def build(name: str, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The PyTorch counterpart of registry model `name` for (H, W, C) images (KeyError if none)."""
    if name == "lenet5":
        return LeNet5(num_classes, image_shape[2], image_shape[:2])
    if name not in BUILDERS:
        raise KeyError(f"no PyTorch counterpart for {name!r}; have {sorted(BUILDERS)}")
    return BUILDERS[name](num_classes, image_shape[2])


def trunk(net: nn.Module) -> nn.Module:
    """The convolutional trunk of a module from `build` (LeNet-5, or a model with `features`),
    ending where the registry's get_trunk ends (KeyError for the others)."""
    if isinstance(net, LeNet5):
        return nn.Sequential(net.conv1, nn.ReLU(), nn.MaxPool2d(2), net.conv2, nn.ReLU(),
                             nn.MaxPool2d(2))
    if hasattr(net, "features"):
        return net.features
    raise KeyError(f"no PyTorch trunk for {type(net).__name__}; LeNet5, AlexNet and VGG have one")


def embedding_encoder(name: str, dim: int, image_shape: tuple[int, int, int],
                      head: str = "flatten") -> nn.Module:
    """jaxcnn.faces.FaceEncoder's network before normalisation: registry model `name`'s trunk,
    the head ('flatten' / 'avg' + one Linear, or 'classifier' resized to `dim`)."""
    if head == "classifier":
        return build(name, dim, image_shape)
    features = trunk(build(name, dim, image_shape))
    pool = nn.Flatten() if head == "flatten" else nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                                nn.Flatten())
    with torch.no_grad():
        width = pool(features(torch.zeros(1, image_shape[2], *image_shape[:2]))).shape[1]
    return nn.Sequential(features, pool, nn.Linear(width, dim))
