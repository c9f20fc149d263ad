"""Style-transfer optimisation steps per second: jaxcnn.style.transfer against the plain
PyTorch implementation (benchmarks/torch_style.py), same network, costs, Adam, image sizes.

    PYTHONPATH=. .venv/bin/python benchmarks/style.py --sizes=256,512 --steps=6

Both run VGG-16 (random weights: the speed does not depend on their values) with the
default content layer conv4_2 and style layers conv1_1..conv5_1 on a square image; each
step reads its costs back to the host (as the experiment's progress does). The first step
(jaxcnn: compilation) is left out of the rate.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import torch_style  # noqa: E402
from jaxcnn import convert, style  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["256", "512"], "Square image sides to time.")
flags.DEFINE_integer("steps", 6, "Steps per run (the first is not timed).")
flags.DEFINE_list("torch_threads", ["2", "1"], "PyTorch intra-op thread counts to time.")


class Clock:
    """Records the time of each step's callback; rate over all but the first step."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, step: int, costs: dict[str, float]) -> None:
        self.times.append(time.perf_counter())

    def rate(self) -> float:
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def time_size(side: int, steps: int, net: style.FeatureNet,
              torch_net: torch_style.VGGFeatures, threads: Sequence[int]) -> list[float]:
    """[jaxcnn steps/s, PyTorch steps/s at each of `threads`] at side x side px."""
    rng = np.random.default_rng(0)
    content, style_image = (rng.uniform(size=(side, side, 3)).astype(np.float32)
                            for _ in range(2))
    kwargs = dict(content_layer=style.CONTENT_LAYER, style_layers=style.STYLE_LAYERS,
                  alpha=1.0, beta=1.0)
    clock = Clock()
    style.transfer(content, style_image, net=net, steps=steps, init="content", callback=clock,
                   **kwargs)
    rates = [clock.rate()]
    for count in threads:
        torch.set_num_threads(count)
        clock = Clock()
        torch_style.transfer(torch_net, content, style_image, content, steps=steps,
                             callback=clock, **kwargs)
        rates.append(clock.rate())
    return rates


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's machine name)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv: Sequence[str]) -> None:
    del argv
    torch.manual_seed(0)
    torch_net = torch_style.VGGFeatures(16).eval()
    depth, params = convert.vgg_convs_from_torchvision(torch_net.state_dict())
    net = style.FeatureNet(depth, params, style.TORCHVISION, "torch init", False)
    threads = [int(t) for t in FLAGS.torch_threads]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start; jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__}")
    torch_columns = [f"PyTorch {t} thread{'s' * (t > 1)}" for t in threads]
    print("| image | jaxcnn steps/s | " + " | ".join(f"{c} steps/s" for c in torch_columns)
          + " | jaxcnn / PyTorch (best) |")
    print("|---" * (len(threads) + 3) + "|")
    for side in (int(s) for s in FLAGS.sizes):
        rates = time_size(side, FLAGS.steps, net, torch_net, threads)
        cells = " | ".join(f"{rate:.3f}" for rate in rates)
        print(f"| {side}x{side} | {cells} | {rates[0] / max(rates[1:]):.2f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    app.run(main)
