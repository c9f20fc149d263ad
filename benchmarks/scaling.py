r"""Data-parallel scaling over forced host devices: steps/s at a fixed per-device batch.

  python benchmarks/scaling.py --model=lenet5 --per_device_batch=32 --devices=1,2,4,8

Each device count runs in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=N, on the loop's mesh and shardings
(parameters replicated, batch split), with the project's train step. Efficiency is
throughput(N) / (N x throughput(1)). On a CPU the N "devices" share the same cores, so
this measures the overhead of partitioning, not a speed-up: on 2 cores expect well
under 1/N once N exceeds the core count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: make `benchmarks` and `jaxcnn` importable
    sys.path.insert(0, ROOT)

from benchmarks.common import model_config  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet5", "registry model name")
flags.DEFINE_string("input", None, "H,W,C (default: throughput.py's default for the model)")
flags.DEFINE_integer("per_device_batch", 32, "examples per device per step")
flags.DEFINE_list("devices", ["1", "2", "4", "8"], "device counts to run")
flags.DEFINE_integer("steps", 10, "timed steps per repeat")
flags.DEFINE_integer("repeats", 5, "timed repeats (the median is reported)")
flags.DEFINE_integer("worker", 0, "internal: run one device count in this process")
flags.DEFINE_string("json", None, "append the results as one JSON line to this file")


def worker_main(model: str, shape: tuple[int, int, int], per_device: int, steps: int,
                repeats: int) -> dict:
    """Steps/s of the project's train step, sharded over this process's devices."""
    import jax
    import numpy as np

    from benchmarks.common import project_program

    devices = jax.device_count()
    batch = per_device * devices
    program = project_program(model, shape, 10, batch=batch)
    state = program.init_state()
    rng = np.random.default_rng(0)
    data = program.to_global({"image": rng.random((batch, *shape), np.float32),
                              "label": rng.integers(0, 10, batch).astype(np.int32)})
    step = program.train_step
    start = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, data)
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(times)
    return {"devices": devices, "batch": batch, "steps_s": 1 / seconds,
            "img_s": batch / seconds, "compile_s": compile_s}


def run_count(n: int) -> dict:
    """One device count in a fresh process (XLA_FLAGS must be set before JAX starts)."""
    flags_env = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": flags_env.strip(),
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [sys.executable, os.path.abspath(__file__), f"--worker={n}", f"--model={FLAGS.model}",
            f"--per_device_batch={FLAGS.per_device_batch}", f"--steps={FLAGS.steps}",
            f"--repeats={FLAGS.repeats}"] + ([f"--input={FLAGS.input}"] if FLAGS.input else [])
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{n} devices failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str]) -> None:
    del argv
    _, shape = model_config(FLAGS.model, 0, FLAGS.input)
    if FLAGS.worker:
        result = worker_main(FLAGS.model, shape, FLAGS.per_device_batch, FLAGS.steps,
                             FLAGS.repeats)
        print(json.dumps(result), flush=True)
        return
    print(f"{FLAGS.model} {'x'.join(map(str, shape))}, per-device batch "
          f"{FLAGS.per_device_batch}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print("devices | global batch | steps/s | img/s | efficiency | compile s")
    print("--- | --- | --- | --- | --- | ---")
    results = []
    for n in (int(v) for v in FLAGS.devices):
        r = run_count(n)
        base = results[0]["img_s"] / results[0]["devices"] if results else r["img_s"] / n
        r["efficiency"] = r["img_s"] / (n * base)
        results.append(r)
        print(f"{n} | {r['batch']} | {r['steps_s']:.2f} | {r['img_s']:.0f} | "
              f"{r['efficiency']:.2f} | {r['compile_s']:.1f}", flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "a") as f:
            f.write(json.dumps({"model": FLAGS.model, "input": shape,
                                "per_device_batch": FLAGS.per_device_batch,
                                "results": results}) + "\n")


if __name__ == "__main__":
    app.run(main)
