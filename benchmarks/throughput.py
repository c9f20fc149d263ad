r"""Train-step and inference throughput of registry models: jaxcnn next to PyTorch, one CPU.

  python benchmarks/throughput.py --model=lenet5 --batch=256 --input=32,32,1
  python benchmarks/throughput.py --models=lenet5,resnet18_cifar --json=out.jsonl
  python benchmarks/throughput.py --all

Each framework runs in its own worker process (so threads and peak RSS are its own); the
parent alternates timed blocks between them (jaxcnn, torch eager, torch.compile, again...)
and reports medians, so load from other processes on the machine hits all of them alike.
The jaxcnn step is the project's real one: `make_steps` with the config's optimiser
(SGD momentum 0.9), jit-compiled with the state donated. PyTorch runs the same network
(benchmarks/torch_models.py), loss and optimiser with torch.set_num_threads(cores).
Achieved FLOP/s come from XLA's cost analysis of the compiled step, as a fraction of this
machine's fp32 matmul peak measured here (best of several large jnp.dot calls).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: make `benchmarks` and `jaxcnn` importable
    sys.path.insert(0, ROOT)

from benchmarks.common import model_config, parse_kwargs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "one registry model name")
flags.DEFINE_list("models", None, "comma-separated registry model names")
flags.DEFINE_bool("all", False, "every registry model")
flags.DEFINE_integer("batch", 0, "batch size (0: the model's CPU-sized default)")
flags.DEFINE_string("input", None, "H,W,C (default: the model's CPU-sized default)")
flags.DEFINE_integer("num_classes", 10, "classifier outputs")
flags.DEFINE_integer("rounds", 5, "timed rounds; each round runs one block per framework")
flags.DEFINE_float("block_seconds", 1.0, "target length of one timed block")
flags.DEFINE_bool("torch", True, "also time PyTorch eager")
flags.DEFINE_bool("torch_compile", True, "also time torch.compile (inductor)")
flags.DEFINE_bool("inference", True, "also time inference (eval-mode forward)")
flags.DEFINE_string("json", None, "append one JSON line per model to this file")
flags.DEFINE_list("jax_variants", [], "extra jaxcnn workers with model kwargs, each "
                  "'key=value;key=value' (e.g. conv_impl=xla), timed in the same rounds")
flags.DEFINE_string("baseline_root", None, "another checkout of this repository (e.g. a "
                    "`git worktree` of an earlier commit): its jaxcnn worker is timed in the "
                    "same rounds as kind 'baseline' (reported as this tree/baseline)")
flags.DEFINE_string("worker", None, "internal: run as a worker (jax[:kwargs] | torch | "
                    "torch_compile)")



# --- workers: build one framework's step, then time blocks on request (JSON lines on stdio)


def _jax_program(name: str, batch: int, shape: tuple[int, int, int], num_classes: int,
                 model_kwargs: dict[str, Any]):
    """Compiled project train and eval steps, their inputs and XLA's cost/memory numbers."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import project_program

    program = project_program(name, shape, num_classes, model_kwargs)
    train_step, eval_step = program.train_fn, program.eval_fn
    state = jax.jit(program.init_fn)(program.rng)
    rng = np.random.default_rng(0)
    data = {"image": jnp.asarray(rng.random((batch, *shape), np.float32)),
            "label": jnp.asarray(rng.integers(0, num_classes, batch).astype(np.int32)),
            "mask": jnp.ones((batch,), jnp.float32)}
    start = time.perf_counter()
    compiled_train = jax.jit(train_step, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - start
    compiled_eval = jax.jit(eval_step).lower(state, data).compile()
    memory = compiled_train.memory_analysis()
    info = {
        "compile_s": compile_s,
        "flops_train": _flops(compiled_train), "flops_infer": _flops(compiled_eval),
        "xla_bytes": None if memory is None else int(
            memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes),
    }
    box = {"state": state}

    def run(mode: str, steps: int) -> None:
        if mode == "train":
            for _ in range(steps):
                box["state"], metrics = compiled_train(box["state"], data)
            jax.block_until_ready((box["state"], metrics))
        else:
            for _ in range(steps):
                sums = compiled_eval(box["state"], data)
            jax.block_until_ready(sums)

    return info, run


def _flops(compiled) -> float | None:
    """'flops' from XLA's cost analysis (a dict, or a list with one dict in older JAX)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def _torch_program(name: str, batch: int, shape: tuple[int, int, int], num_classes: int,
                   compile_model: bool):
    """The same network, loss and optimiser in PyTorch (eager or torch.compile)."""
    import torch

    from benchmarks import torch_models

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = torch_models.build(name, num_classes, shape)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, shape[2], shape[0], shape[1])
    y = torch.randint(0, num_classes, (batch,))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(x), y).backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode():
            forward(x)

    start = time.perf_counter()
    model.train()
    train_step()
    compile_s = time.perf_counter() - start

    def run(mode: str, steps: int) -> None:
        model.train(mode == "train")
        for _ in range(steps):
            train_step() if mode == "train" else infer_step()

    return {"compile_s": compile_s}, run


def worker_main(kind: str, name: str, batch: int, shape: tuple[int, int, int],
                num_classes: int) -> None:
    """Serve {"mode", "steps"} requests on stdin with {"seconds"} on the original stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (ours, XLA's, inductor's) must not corrupt the protocol

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")

    try:
        if kind.startswith("jax"):
            model_kwargs = parse_kwargs(kind.partition(":")[2])
            info, run = _jax_program(name, batch, shape, num_classes, model_kwargs)
        else:
            info, run = _torch_program(name, batch, shape, num_classes, kind == "torch_compile")
        for mode in ("train", "infer"):  # warm-up, including torch.compile's eval graph
            start = time.perf_counter()
            run(mode, 1)
            info[f"first_{mode}_s"] = time.perf_counter() - start
    except Exception as error:  # reported, not raised: the other frameworks still run
        reply({"error": f"{type(error).__name__}: {error}"[:2000]})
        return
    reply(info)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("mode") == "quit":
            break
        start = time.perf_counter()
        run(request["mode"], request["steps"])
        reply({"seconds": time.perf_counter() - start})
    reply({"max_rss_mb": peak_rss_mb()})


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (VmHWM: unlike ru_maxrss, it is not
    inherited from the parent across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the parent: start workers, alternate timed blocks, report


class Worker:
    """One worker process, spoken to in JSON lines."""

    def __init__(self, kind: str, name: str, batch: int, shape: tuple[int, int, int],
                 num_classes: int, env: dict[str, str] | None = None, root: str = ROOT):
        self.kind = kind
        self.log = tempfile.TemporaryFile(mode="w+")
        script = os.path.join(root, "benchmarks", "throughput.py")
        args = [sys.executable, script, f"--worker={'jax' if kind == 'baseline' else kind}",
                f"--model={name}", f"--batch={batch}", f"--input={','.join(map(str, shape))}",
                f"--num_classes={num_classes}"]
        full_env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=full_env, cwd=root)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-1500:]
            return {"error": f"worker exited ({self.process.wait()}): {tail}"}
        return json.loads(line)

    @property
    def ok(self) -> bool:
        return "error" not in self.info

    def time(self, mode: str, steps: int) -> float:
        self.process.stdin.write(json.dumps({"mode": mode, "steps": steps}) + "\n")
        self.process.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"mode": "quit"}) + "\n")
            self.process.stdin.flush()
            result = self._read()
        self.process.wait()
        self.log.close()
        return result


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Best fp32 matmul GFLOP/s of jnp.dot (the peak we report against) and of torch.mm."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    result = {"jax_gflops": 2 * n**3 / best / 1e9}
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        t = torch.rand(n, n)
        torch.mm(t, t)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(t, t)
            best = min(best, time.perf_counter() - start)
        result["torch_gflops"] = 2 * n**3 / best / 1e9
    except ImportError:
        pass
    return result


def machine() -> dict[str, Any]:
    """CPU model, core count, load and library versions, for the README's table header."""
    import jax

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "jax": jax.__version__,
            "python": platform.python_version(), "load_avg": os.getloadavg()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def measure(name: str, batch: int, shape: tuple[int, int, int], num_classes: int,
            kinds: tuple[str, ...], rounds: int, block_seconds: float,
            inference: bool) -> dict[str, Any]:
    """Start one worker per framework and time alternating blocks; medians per framework."""
    workers = {kind: Worker(kind, name, batch, shape, num_classes,
                            root=FLAGS.baseline_root if kind == "baseline" else ROOT)
               for kind in kinds}
    result: dict[str, Any] = {"model": name, "batch": batch, "input": list(shape)}
    live = {kind: w for kind, w in workers.items() if w.ok}
    modes = ("train", "infer") if inference else ("train",)
    times: dict[tuple[str, str], list[float]] = {(k, m): [] for k in live for m in modes}
    steps = {(k, m): max(1, round(block_seconds / max(w.info[f"first_{m}_s"], 1e-4) / 2))
             for k, w in live.items() for m in modes}
    for _ in range(rounds):
        for mode in modes:
            for kind, worker in live.items():
                n = steps[(kind, mode)]
                times[(kind, mode)].append(worker.time(mode, n) / n)
    for kind, worker in workers.items():
        entry = dict(worker.info)
        entry.update(worker.close())
        for mode in modes:
            if (kind, mode) in times:
                entry[f"{mode}_img_s"] = batch / statistics.median(times[(kind, mode)])
        result[kind] = entry
    return result


def summarize(result: dict[str, Any], peak_gflops: float) -> dict[str, Any]:
    """Add the jax/PyTorch ratio (vs the faster PyTorch) and the fraction of peak."""
    jax_entry = result.get("jax", {})
    torch_best = max((result.get(k, {}).get("train_img_s", 0.0)
                      for k in ("torch", "torch_compile")), default=0.0)
    if jax_entry.get("train_img_s") and torch_best:
        result["ratio_train"] = jax_entry["train_img_s"] / torch_best
    infer_best = max((result.get(k, {}).get("infer_img_s", 0.0)
                      for k in ("torch", "torch_compile")), default=0.0)
    if jax_entry.get("infer_img_s") and infer_best:
        result["ratio_infer"] = jax_entry["infer_img_s"] / infer_best
    if jax_entry.get("flops_train") and jax_entry.get("train_img_s"):
        achieved = jax_entry["flops_train"] * jax_entry["train_img_s"] / result["batch"]
        result["train_gflops"] = achieved / 1e9
        result["train_peak_fraction"] = achieved / 1e9 / peak_gflops
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_row(r: dict[str, Any]) -> str:
    """One markdown row: model, batch, input, img/s per framework, ratio, compile, % peak."""
    def img_s(kind: str, mode: str = "train") -> str:
        entry = r.get(kind)
        if entry is None:
            return "-"
        if "error" in entry:
            return "failed"
        return _fmt(entry.get(f"{mode}_img_s"), ".0f")

    jax_entry = r.get("jax", {})
    peak = r.get("train_peak_fraction")
    return " | ".join([
        r["model"], str(r["batch"]), "x".join(map(str, r["input"])),
        img_s("jax"), img_s("torch"), img_s("torch_compile"), _fmt(r.get("ratio_train"), ".2f"),
        img_s("jax", "infer"), img_s("torch", "infer"), img_s("torch_compile", "infer"),
        _fmt(r.get("ratio_infer"), ".2f"), _fmt(jax_entry.get("compile_s"), ".1f"),
        _fmt(None if peak is None else 100 * peak, ".1f"),
        _fmt(jax_entry.get("max_rss_mb"), ".0f"), _fmt(r.get("torch", {}).get("max_rss_mb"), ".0f"),
    ])


def variant_line(kind: str, result: dict[str, Any]) -> str:
    """A jaxcnn variant's throughput relative to the default jaxcnn worker."""
    entry, base = result[kind], result.get("jax", {})
    parts = [f"{kind}:"]
    for mode in ("train", "infer"):
        if entry.get(f"{mode}_img_s") and base.get(f"{mode}_img_s"):
            parts.append(f"{mode} {entry[f'{mode}_img_s']:.0f} img/s "
                         f"(default/variant {base[f'{mode}_img_s'] / entry[f'{mode}_img_s']:.2f})")
    return " ".join(parts)


HEADER = ("model | batch | input | jax train img/s | torch eager | torch.compile | ratio | "
          "jax infer img/s | torch eager | torch.compile | ratio | jax compile s | % peak | "
          "jax RSS MB | torch RSS MB")


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.worker:
        batch, shape = model_config(FLAGS.model, FLAGS.batch, FLAGS.input)
        worker_main(FLAGS.worker, FLAGS.model, batch, shape, FLAGS.num_classes)
        return
    from jaxcnn import models

    names = (models.list_models() if FLAGS.all else FLAGS.models or
             ([FLAGS.model] if FLAGS.model else None))
    if not names:
        raise app.UsageError("give --model, --models or --all")
    kinds = ("jax",) + (("torch",) if FLAGS.torch else ()) + (
        ("torch_compile",) if FLAGS.torch_compile else ()) + tuple(
        f"jax:{variant}" for variant in FLAGS.jax_variants) + (
        ("baseline",) if FLAGS.baseline_root else ())
    info = machine()
    peak = matmul_peak()
    info.update(peak)
    print(json.dumps(info), flush=True)
    print(HEADER)
    print(" | ".join(["---"] * len(HEADER.split(" | "))), flush=True)
    for name in names:
        batch, shape = model_config(name, FLAGS.batch, FLAGS.input)
        result = measure(name, batch, shape, FLAGS.num_classes, kinds, FLAGS.rounds,
                         FLAGS.block_seconds, FLAGS.inference)
        result = summarize(result, peak["jax_gflops"])
        result["machine"] = info
        print(table_row(result), flush=True)
        for kind in kinds:
            if "error" in result.get(kind, {}):
                print(f"  {kind} failed: {result[kind]['error'][:300]}", flush=True)
            elif kind.startswith("jax:") or kind == "baseline":
                print("  " + variant_line(kind, result), flush=True)
        if FLAGS.json:
            with open(FLAGS.json, "a") as f:
                f.write(json.dumps(result) + "\n")
    print(json.dumps({"load_avg_end": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    app.run(main)
