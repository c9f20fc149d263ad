r"""Train and inference images/s of the YOLO-style detector (the loop's own program).

  python benchmarks/detector.py [--config=experiments/configs/detect_synthetic.py] [--batch=32]

The detector is the config's (trunk, grid, anchors count, head width, input side).

The train step is `train.build_program`'s (the one every run uses); inference is the eval
step (forward, decode, per-class NMS). Data is already on the device; medians of --rounds.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time

import jax
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jaxcnn import train  # noqa: E402
from jaxcnn.data.detection import synthetic_scenes  # noqa: E402
from jaxcnn.tasks import detector  # noqa: E402
from jaxcnn.train.metrics import images_per_second  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "experiments/configs/detect_synthetic.py", "detector config")
flags.DEFINE_integer("batch", 32, "batch size")
flags.DEFINE_integer("steps", 5, "steps per timed round")
flags.DEFINE_integer("rounds", 3, "timed rounds (median reported)")


def _rate(fn, steps: int, rounds: int, batch: int) -> tuple[float, float]:
    """(compile seconds, median images/s) of `fn()` called `steps` times per round."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - start
    rates = [images_per_second(fn, steps, batch) for _ in range(rounds)]
    return compile_s, statistics.median(rates)


def main(argv):
    del argv
    spec = importlib.util.spec_from_file_location("detector_config", FLAGS.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update({"batch_size": FLAGS.batch, "eval_batch_size": FLAGS.batch, "train_steps": 1})
    side = config.image_size[0]
    dataset = synthetic_scenes(FLAGS.batch, FLAGS.batch, image_size=side)
    program = train.build_program(config, lambda resolved: detector.make_task(resolved, dataset))
    state = program.init_state()
    batch = program.to_global(next(dataset.train_batches(FLAGS.batch, seed=0)))
    eval_batch = program.to_global(next(dataset.eval_batches(FLAGS.batch)))
    box = {"state": state}

    def train_once():
        box["state"], metrics = program.train_step(box["state"], batch)
        return metrics

    train_compile, train_rate = _rate(train_once, FLAGS.steps, FLAGS.rounds, FLAGS.batch)
    infer_compile, infer_rate = _rate(lambda: program.eval_step(box["state"], eval_batch),
                                      FLAGS.steps, FLAGS.rounds, FLAGS.batch)
    device = jax.devices()[0]
    print(f"detector ({config.task.backbone} trunk {dict(config.task.backbone_kwargs)}, "
          f"{side}x{side}, grid {config.task.grid}, batch {FLAGS.batch}) "
          f"on {device.platform} ({device.device_kind}, {os.cpu_count()} cores): train "
          f"{train_rate:.1f} img/s (compile {train_compile:.1f} s), inference with NMS "
          f"{infer_rate:.1f} img/s (compile {infer_compile:.1f} s)")


if __name__ == "__main__":
    app.run(main)
