"""Neural style transfer written in plain PyTorch (NCHW): the reference that jaxcnn.style is
tested and timed against. Same network (torchvision's VGG `features` layout, so its
state dict loads into jaxcnn through jaxcnn.convert), costs, preprocessing, Adam, clipping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

STAGES = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet input


class VGGFeatures(nn.Module):
    """torchvision's VGG `features` (conv, ReLU, ..., max pool): state dict keys features.N.*"""

    def __init__(self, depth: int = 16):
        super().__init__()
        layers: list[nn.Module] = []  # ReLU not in place: conv{s}_{i} stays pre-activation
        self.names: list[str] = []  # the name of each module's output
        channels = 3
        for s, (convs, width) in enumerate(zip(STAGES[depth], WIDTHS), start=1):
            for i in range(1, convs + 1):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                self.names += [f"conv{s}_{i}", f"relu{s}_{i}"]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
            self.names.append(f"pool{s}")
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """{name: activation (N, C, H, W)} for `layers`, stopping after the deepest."""
        out, last = {}, max(self.names.index(name) for name in layers)
        for name, module in zip(self.names[: last + 1], self.features):
            x = module(x)
            if name in layers:
                out[name] = x
        return out


def gram(a: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C)."""
    flat = a.flatten(2)
    return flat @ flat.transpose(1, 2)


def objective(net: VGGFeatures, image: torch.Tensor, a_C: torch.Tensor,
              grams: dict[str, torch.Tensor], content_layer: str,
              style_weights: dict[str, float], alpha: float, beta: float,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, content cost, weighted style cost) of `image` (1, 3, H, W) in [0, 1]."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    acts = net((image - mean) / std, [content_layer, *style_weights])
    content = 0.5 * ((acts[content_layer] - a_C) ** 2).sum()
    style = image.new_zeros(())
    for name, weight in style_weights.items():
        _, c, h, w = acts[name].shape
        squared = ((grams[name] - gram(acts[name])) ** 2).sum()
        style = style + weight * squared / (2 * h * w * c) ** 2
    return alpha * content + beta * style, content, style


def transfer(net: VGGFeatures, content: np.ndarray, style: np.ndarray, start: np.ndarray, *,
             content_layer: str, style_layers: Sequence[str], alpha: float, beta: float,
             steps: int, learning_rate: float = 0.02,
             callback: Callable[[int, dict[str, float]], None] | None = None,
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Adam on the pixels of `start` (H, W, 3) with clipping to [0, 1]; the costs before each
    step and at the end, as jaxcnn.style.transfer records them (and hands `callback`)."""
    to_torch = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))  # noqa: E731
    weights = {name: 1.0 / len(style_layers) for name in style_layers}
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        a_C = net((to_torch(content) - mean) / std, [content_layer])[content_layer]
        a_S = net((to_torch(style) - mean) / std, list(style_layers))
        grams = {name: gram(a_S[name]) for name in style_layers}
    image = to_torch(start.astype(np.float32)).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=learning_rate)
    history: dict[str, list[float]] = {"total": [], "content": [], "style": []}
    for step in range(steps + 1):
        optimizer.zero_grad()
        total, content_cost, style_cost = objective(net, image, a_C, grams, content_layer,
                                                    weights, alpha, beta)
        for name, value in (("total", total), ("content", content_cost), ("style", style_cost)):
            history[name].append(float(value.detach()))
        if step == steps:
            break
        total.backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
        if callback is not None:
            callback(step, {name: values[-1] for name, values in history.items()})
    result = image.detach()[0].permute(1, 2, 0).numpy()
    return result, {name: np.asarray(values) for name, values in history.items()}
