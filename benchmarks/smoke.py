r"""Smoke-test registry models at their native input: the loop's train step on one fixed
random batch; the first loss must lie within 5 % of ln(classes) and the loss after 5
steps below it.

  python benchmarks/smoke.py --budget_s=90 --json=smoke.jsonl   # the whole registry
  python benchmarks/smoke.py --models=lenet5,resnet20_cifar --batch=4

Models are compiled and run by a few threads at once (XLA compiles without holding the
GIL); a model not started before --budget_s has passed is reported as skipped. One JSON
line per model is appended to --json as soon as it finishes, so a run killed at its time
limit keeps what it did.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
import time
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import check_losses  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "registry names (default: all, smallest inputs first)")
flags.DEFINE_integer("batch", 16, "images per step for 224-pixel models")
flags.DEFINE_integer("small_batch", 64, "images per step for 32-pixel models (the mean loss "
                     "over random labels is noisy: 5 % of ln 10 is 0.12)")
flags.DEFINE_integer("steps", 5, "update steps before the loss is compared")
flags.DEFINE_string("dtype", "float32", "compute dtype (parameters stay float32)")
flags.DEFINE_integer("side", 0, "override the native side of 224-pixel models (0: native)")
flags.DEFINE_integer("threads", 4, "models compiled and run at once")
flags.DEFINE_float("budget_s", 0.0, "skip models not started after this many seconds (0: none)")
flags.DEFINE_string("json", None, "append one JSON line per model here")

def smoke_one(name: str, batch: int, steps: int, dtype: str, side: int) -> dict[str, Any]:
    """Compile the train step of `name`, run steps + 1 times on one batch; the criteria."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import project_program
    from experiments.tables.architectures import native_input

    shape, num_classes = native_input(name)
    if side and shape[0] > 32:
        shape = (side, side, shape[2])
    program = project_program(name, shape, num_classes, batch=batch, dtype=dtype)
    train_step = program.train_fn
    state = jax.jit(program.init_fn)(program.rng)
    rng = np.random.default_rng(0)
    data = {"image": jnp.asarray(rng.random((batch, *shape), np.float32)),
            "label": jnp.asarray(rng.integers(0, num_classes, batch).astype(np.int32))}
    start = time.perf_counter()
    step = jax.jit(train_step, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - start
    losses = []
    start = time.perf_counter()
    for _ in range(steps + 1):
        state, metrics = step(state, data)
        losses.append(metrics["loss"])
    losses = [float(v) for v in jax.device_get(losses)]
    step_ms = 1000 * (time.perf_counter() - start) / (steps + 1)
    return {"model": name, "input": list(shape), "classes": num_classes, "batch": batch,
            "dtype": dtype, "compile_s": compile_s, "step_ms": step_ms, "losses": losses,
            **check_losses(losses, num_classes)}


def order_models(names: list[str]) -> list[str]:
    """Small inputs first, so a tight budget tests as many models as possible."""
    from experiments.tables.architectures import native_input

    return sorted(names, key=lambda n: (native_input(n)[0][0], n))


def main(argv):
    del argv
    from experiments.tables.architectures import native_input
    from jaxcnn import models

    start = time.perf_counter()
    names = order_models(FLAGS.models or models.list_models())
    lock = threading.Lock()
    results: list[dict[str, Any]] = []

    def job(name: str) -> dict[str, Any]:
        if FLAGS.budget_s and time.perf_counter() - start > FLAGS.budget_s:
            result = {"model": name, "skipped": f"not started within {FLAGS.budget_s:.0f} s"}
        else:
            try:
                batch = FLAGS.small_batch if native_input(name)[0][0] <= 32 else FLAGS.batch
                result = smoke_one(name, batch, FLAGS.steps, FLAGS.dtype, FLAGS.side)
            except Exception as error:  # one failing model must not hide the others
                result = {"model": name, "ok": False,
                          "error": f"{type(error).__name__}: {error}"[:1000]}
        with lock:
            results.append(result)
            if FLAGS.json:
                with open(FLAGS.json, "a") as f:
                    f.write(json.dumps(result) + "\n")
            print(summary_line(result), flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(FLAGS.threads) as pool:
        list(pool.map(job, names))
    passed = sum(bool(r.get("ok")) for r in results)
    skipped = sum("skipped" in r for r in results)
    print(f"smoke: {passed} passed, {len(results) - passed - skipped} failed, {skipped} skipped "
          f"of {len(results)} in {time.perf_counter() - start:.0f} s", flush=True)


def summary_line(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"SKIP {r['model']}: {r['skipped']}"
    if "error" in r:
        return f"FAIL {r['model']}: {r['error'][:300]}"
    return (f"{'PASS' if r['ok'] else 'FAIL'} {r['model']} {'x'.join(map(str, r['input']))} "
            f"loss {r['initial_loss']:.3f} (ln {r['ln_classes']:.3f}) -> {r['final_loss']:.3f}"
            f"  compile {r['compile_s']:.1f} s  step {r['step_ms']:.1f} ms")


if __name__ == "__main__":
    app.run(main)
