r"""Face-embedding throughput: jaxcnn's FaceEncoder next to a plain PyTorch encoder, one CPU.

  python benchmarks/faces.py [--trunk=lenet5] [--head=flatten] [--batch=256] [--input=64,64,1]
      [--dim=64]

Both encoders are the same network: the registry trunk, the head (`flatten`/`avg`: its
feature map flattened or averaged, then one linear layer; `classifier`: the whole model with
its classifier resized to the embedding dimension), then L2 normalisation (PyTorch:
benchmarks/torch_models.embedding_encoder + torch.nn.functional.normalize), fp32, inference
mode. jaxcnn runs the jit-compiled `FaceEncoder.apply` the experiment uses; PyTorch runs
eager with torch.set_num_threads equal to the cores JAX sees. Timed blocks alternate between
the two (so load from other processes hits both alike) and the medians are reported in
images/s.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: make `benchmarks` and `jaxcnn` importable
    sys.path.insert(0, ROOT)

from jaxcnn.faces import HEADS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("trunk", "lenet5", "registry model used as the trunk")
flags.DEFINE_integer("batch", 256, "images per call")
flags.DEFINE_string("input", "64,64,1", "H,W,C")
flags.DEFINE_integer("dim", 64, "embedding dimension")
flags.DEFINE_enum("head", "flatten", list(HEADS), "FaceEncoder head")
flags.DEFINE_integer("rounds", 7, "timed rounds, one block per framework each")
flags.DEFINE_float("block_seconds", 1.0, "target length of one timed block")


def _time_block(fn, seconds: float) -> float:
    """Images/s of repeated fn() calls over about `seconds` (fn returns the batch size)."""
    start, images = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds or images == 0:
        images += fn()
    return images / elapsed


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from benchmarks import torch_models
    from jaxcnn import counting, faces, train

    shape = tuple(int(v) for v in FLAGS.input.split(","))
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    x = np.random.default_rng(0).random((FLAGS.batch, *shape), np.float32)

    conv_impl = train.platform_conv_impl("auto")  # as the experiment
    model = faces.FaceEncoder(FLAGS.trunk, FLAGS.dim, {"conv_impl": conv_impl}, head=FLAGS.head)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]), train=False)
    apply = jax.jit(lambda v, images: model.apply(v, images, train=False))
    x_jax = jnp.asarray(x)
    apply(variables, x_jax).block_until_ready()

    def run_jax() -> int:
        apply(variables, x_jax).block_until_ready()
        return FLAGS.batch

    net = torch_models.embedding_encoder(FLAGS.trunk, FLAGS.dim, shape, FLAGS.head).eval()
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def run_torch() -> int:
        with torch.inference_mode():
            torch.nn.functional.normalize(net(x_torch), dim=1)
        return FLAGS.batch

    run_torch()
    jax_params = counting.count_params(variables)
    torch_params = sum(p.numel() for p in net.parameters())
    rates: dict[str, list[float]] = {"jaxcnn": [], "torch": []}
    for _ in range(FLAGS.rounds):
        rates["jaxcnn"].append(_time_block(run_jax, FLAGS.block_seconds))
        rates["torch"].append(_time_block(run_torch, FLAGS.block_seconds))
    jax_rate, torch_rate = (statistics.median(rates[k]) for k in ("jaxcnn", "torch"))
    print(f"{FLAGS.trunk} encoder, {FLAGS.head} head ({conv_impl}), {FLAGS.dim}-d embedding, "
          f"input {shape}, batch {FLAGS.batch}, {cores} cores, {FLAGS.rounds} alternating "
          "rounds (median)")
    print(f"parameters: jaxcnn {jax_params:,}  torch {torch_params:,}")
    print(f"jaxcnn  {jax_rate:10.0f} images/s")
    print(f"torch   {torch_rate:10.0f} images/s")
    print(f"jaxcnn / torch = {jax_rate / torch_rate:.2f}")


if __name__ == "__main__":
    app.run(main)
