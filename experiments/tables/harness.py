"""How the trained tables train and the architectures table times: budgets, data, runs.

Every variant trains through `jaxcnn.train.train_and_evaluate` (`train_variant`); timing uses
the training loop's own steps from `jaxcnn.train.build_program` (`measure_throughput`, through
`_loop_program`, the one place this module reaches below `train_and_evaluate`). A table trains
its variants through one `Runs`: the same config and data for every variant, and the notes
saying what ran where.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tables.render import machine_description
from jaxcnn import counting, data, train
from jaxcnn.tasks import classification
from jaxcnn.train.metrics import images_per_second

BUDGETS = ("tiny", "small", "medium", "full")
# Budgets only tests use: the medium budget's structure (seeds, schedule, data) at test size.
TEST_BUDGETS = ("medium_tiny",)


def check_budget(budget: str) -> None:
    """ValueError naming the valid budgets unless `budget` is one of them."""
    if budget not in BUDGETS + TEST_BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")


def duration(seconds: float) -> str:
    """h:mm:ss (or m:ss) of a number of seconds."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def check_variants(variants: Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    """`variants` (all of `valid` when None); ValueError naming the valid ones if unknown/empty."""
    if variants is None:
        return list(valid)
    bad = [v for v in variants if v not in valid]
    if bad or not variants:
        raise ValueError(f"{what}: unknown or empty variants {list(variants)}; valid: "
                         f"{', '.join(valid)}")
    return list(variants)


# ---------------------------------------------------------------------------------------------
# Budgets: the training config and the data


@dataclasses.dataclass(frozen=True)
class Budget:
    """How one table trains at one budget: config overrides, the data and table settings.

    `config` is 'key=value,...' applied to `train.default_config()`; `side`, `train_examples`
    and `test_examples` resize and subset the embedded digits (ignored for other datasets);
    `settings` are the table's own knobs (widths, depths, input sizes, `seeds`: the seeds
    each variant trains with, default the config's one; `note`: why the budget is sized as
    it is, added to the table's training note).
    """

    config: str
    side: int | None = None
    train_examples: int | None = None
    test_examples: int | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# Config overrides the tables' small budgets share: no TensorBoard, no intermediate checkpoints.
QUIET = "tensorboard=False,checkpoint_every_steps=1000000,keep_checkpoints=1"
TINY = f"{QUIET},train_steps=2,batch_size=8,eval_batch_size=16,log_every_steps=1"
# The medium budget: CIFAR-10 (the TFDS name; `--data=folder:PATH` for train/ and test/ class
# folders) with pad-4 crops and flips, momentum SGD with a short warm-up and cosine decay to
# zero (so the last 10 % of the steps barely move the loss), checkpoints every 500 steps so
# an interrupted table resumes. Each table adds train_steps, learning_rate, weight_decay.
MEDIUM = ("dataset='cifar10',augment='crop_flip',batch_size=128,eval_batch_size=500,"
          "optimizer='momentum',momentum=0.9,schedule='cosine',log_every_steps=50,"
          "tensorboard=False,checkpoint_every_steps=500,keep_checkpoints=1")
# The tiny variant of MEDIUM (tests): same data path, optimiser and schedule, a few steps.
MEDIUM_TINY = ("augment='crop_flip',batch_size=8,eval_batch_size=16,optimizer='momentum',"
               "schedule='cosine',log_every_steps=1,train_steps=4,tensorboard=False,"
               "checkpoint_every_steps=1000000,keep_checkpoints=1")
# Convergence: the training loss may change by less than this over the last 10 % of steps.
CONVERGED_FRACTION, CONVERGED_CHANGE = 0.1, 0.05


def training_config(spec: Budget, overrides: str | None = None,
                    data_dir: str | None = None) -> ml_collections.ConfigDict:
    """default_config() with the budget's overrides, then the caller's `overrides`."""
    config = train.override(train.default_config(), spec.config)
    config = train.override(config, overrides)
    if data_dir:
        config.data_dir = data_dir
    return config


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """NHWC float images resized to side x side (linear, antialiased when shrinking)."""
    n, _, _, c = images.shape
    return np.asarray(jax.image.resize(jnp.asarray(images), (n, side, side, c), "linear"))


@functools.cache
def _embedded_digits() -> Any:
    """The embedded MNIST digits at 32x32, loaded once per process (it takes seconds)."""
    return data.embedded_mnist((32, 32))


def budget_dataset(config: ml_collections.ConfigDict, spec: Budget) -> Any:
    """The dataset named by config; the embedded digits resized and subset as `spec` says."""
    if config.dataset != "embedded_mnist":
        return data.get_dataset(config.dataset, data_dir=config.data_dir,
                                image_size=config.image_size, augment=config.augment,
                                download=config.download)
    dataset = dataclasses.replace(_embedded_digits(), augment=config.augment or "none")
    # The digits are stored sorted by class: subset a seeded shuffle, not a prefix.
    train_rows = np.random.default_rng(0).permutation(dataset.num_train)[:spec.train_examples]
    test_rows = np.random.default_rng(1).permutation(dataset.num_eval)[:spec.test_examples]
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[np.sort(train_rows)],
                                  y_train=dataset.y_train[np.sort(train_rows)],
                                  x_test=dataset.x_test[np.sort(test_rows)],
                                  y_test=dataset.y_test[np.sort(test_rows)])
    if spec.side and spec.side != 32:
        dataset = dataclasses.replace(dataset, x_train=resize_images(dataset.x_train, spec.side),
                                      x_test=resize_images(dataset.x_test, spec.side))
    return dataset


def _steps(config: ml_collections.ConfigDict, dataset: Any) -> int:
    return train.to_steps(config, "train", dataset.steps_per_epoch(config.batch_size))


def describe_run(config: ml_collections.ConfigDict, dataset: Any,
                 seeds: Sequence[int] | None = None) -> tuple[str, str]:
    """('dataset: ...', 'training: ...') notes: the data, the steps, the optimiser."""
    h, w, c = dataset.image_shape
    if config.dataset == "embedded_mnist":
        what = (f"dataset: embedded MNIST ({dataset.num_train:,} train / {dataset.num_eval:,} "
                f"test real digits, 28x28 padded to 32x32, here {h}x{w}x{c})")
    else:
        what = (f"dataset: {config.dataset} ({dataset.num_train:,} train / {dataset.num_eval:,} "
                f"eval images at {h}x{w}x{c})")
    per_epoch = dataset.steps_per_epoch(config.batch_size)
    steps = train.to_steps(config, "train", per_epoch)
    how = (f"training: {steps:,} steps of batch {config.batch_size} ({steps / per_epoch:.1f} "
           f"epochs), {config.optimizer} lr {config.learning_rate:g} {config.schedule}, "
           f"{_seeds_text(seeds or (config.seed,))}, identical for every variant; "
           f"{config.augment or 'no'} augmentation; accuracy on all "
           f"{dataset.num_eval:,} test images")
    return what, how


def _seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))}: init, data order, augmentation)"


# ---------------------------------------------------------------------------------------------
# Training one variant


def train_curve(workdir: str, key: str = "accuracy") -> list[tuple[int, float]]:
    """(step, value) of `key` from workdir/metrics.jsonl's train lines (the last per step)."""
    points: dict[int, float] = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("split") == "train" and key in record:
                points[int(record["step"])] = float(record[key])
    return sorted(points.items())


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One trained variant: final eval metrics and the training-accuracy curve."""

    metrics: dict[str, float]
    curve: list[tuple[int, float]]
    steps_run: int | None = None  # steps this call trained (fewer when it resumed a run)
    loss_curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)


# (config, dataset, workdir, flax module or None for config.model) -> RunResult
Trainer = Callable[[ml_collections.ConfigDict, Any, str, Any], RunResult]

# Config keys that change when or where a run reports, not what it computes: a finished run's
# record is reused whatever these say.
RECORD_NEUTRAL_KEYS = frozenset({
    "conv_impl", "data_workers", "data_dir", "download", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "async_checkpoints", "progress",
    "progress_label", "tensorboard"})
# What a finished run leaves besides its checkpoints; results/*/runs/ keeps only these in git,
# so a table resumed on another machine (or after its checkpoints are deleted) retrains nothing.
RECORD_FILES = ("final_metrics.json", "metrics.jsonl", "config.json", "train_seconds.json")


def _json_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def record_mismatch(run_dir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The keys of `config` (the result-shaping ones) whose value run_dir/config.json differs
    on, as 'key: recorded -> now'; empty when the recorded run is this config's."""
    with open(os.path.join(run_dir, "config.json")) as f:
        recorded = json.load(f)
    missing = object()
    return [f"{key}: {recorded.get(key, '(absent)')!r} -> {value!r}"
            for key, value in _json_config(config).items()
            if key not in RECORD_NEUTRAL_KEYS and recorded.get(key, missing) != value]


def finished_record(run_dir: str, config: ml_collections.ConfigDict, steps: int,
                    on_stale: Callable[[str], None] | None = None) -> RunResult | None:
    """The RunResult (steps_run 0) a run of `config` that finished all `steps` recorded in
    run_dir (final_metrics.json, metrics.jsonl, config.json); None when there is no such
    record, it stopped short, or it was trained with other settings (the last two are told
    to `on_stale`, with why, when it is given)."""
    paths = [os.path.join(run_dir, name) for name in RECORD_FILES[:3]]
    if not all(os.path.exists(path) for path in paths):
        return None
    with open(paths[0]) as f:
        final = json.load(f)
    step, mismatch = final.get("step"), record_mismatch(run_dir, config)
    if step != steps or mismatch:
        if on_stale is not None:
            on_stale(f"its record stops at step {step} of {steps}" if step != steps else
                     f"its record was trained with other settings ({'; '.join(mismatch)})")
        return None
    metrics = {key: float(value) for key, value in final.items() if key != "step"}
    return RunResult(metrics, train_curve(run_dir), 0, train_curve(run_dir, "loss"))


def train_variant(config: ml_collections.ConfigDict, dataset: Any, workdir: str,
                  model: Any = None) -> RunResult:
    """Train config.model (or `model`, a flax module) on `dataset` with train_and_evaluate."""
    if not config.get("progress_label"):  # say which of the table's runs a progress line is
        config = config.copy_and_resolve_references()
        config.progress_label = os.path.join(*os.path.normpath(workdir).split(os.sep)[-2:])
    task = classification.make_task(train.resolve_platform(config), dataset, model=model)
    result = train.train_and_evaluate(config, workdir, task)
    return RunResult(dict(result.metrics), train_curve(workdir), result.steps_run,
                     train_curve(workdir, "loss"))


def late_loss_change(loss_curve: Sequence[tuple[int, float]], total_steps: int,
                     fraction: float = CONVERGED_FRACTION) -> float | None:
    """Relative drop of the training loss over the last `fraction` of `total_steps`.

    (L(a) - L(T)) / L(a) with a = floor((1 - fraction) T) (< T); L(t) is the mean of the logged loss
    values (each already a mean over its logging window) at steps in (t - w, t], with
    w = max(fraction T / 2, 1). None when either window has no logged value.
    """
    total = int(total_steps)
    start = min(int((1.0 - fraction) * total), total - 1)
    width = max(fraction * total / 2.0, 1.0)

    def mean_at(end: float) -> float | None:
        values = [loss for step, loss in loss_curve if end - width < step <= end]
        return float(np.mean(values)) if values else None

    before, after = mean_at(start), mean_at(total)
    if before is None or after is None or before == 0.0:
        return None
    return (before - after) / before


def forward_macs(module: Any, image_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of `module` on one (H, W, C) image."""
    return counting.total_macs(counting.summary(module, tuple(image_shape)))


def spread(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof 1) of `values`: the seed spread (None for fewer than
    two values or if any is None)."""
    if len(values) < 2 or any(v is None for v in values):
        return None
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of `values` (None if any is None)."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def largest_change(changes: Sequence[float | None]) -> float | None:
    """The late loss change (in %, negative = the loss fell) farthest from zero over seeds."""
    if not changes or any(c is None for c in changes):
        return None
    return -100.0 * max(changes, key=abs)


# ---------------------------------------------------------------------------------------------
# Verdicts: which budgets can test a claim, and the one rule every trained table applies

# Which budgets can test each trained table's claim (the one place that says so). The others
# print TOO_SMALL instead of a verdict, with the reason in NO_VERDICT_WHY.
VERDICT_BUDGETS: dict[str, tuple[str, ...]] = {
    "filter_sizes": ("medium", "full"),
    "alexnet_ablation": ("medium", "full"),
    "residual_vs_plain": ("medium", "full"),
}
NO_VERDICT_WHY: dict[str, str] = {
    "tiny": "a smoke test (1-2 steps on 16-64 images) that only shows the table runs",
    "small": "one seed and a few hundred steps on the embedded digits: it shows the machinery "
             "and the counts, not the papers' claims, which are about CIFAR-10 or ImageNet "
             "after training to near convergence",
    "medium_tiny": "the medium settings at test size (4 steps)",
}
TOO_SMALL = "budget too small for a verdict"
# A verdict needs the mean and the spread over at least this many seeds.
MIN_SEEDS = 3
# Runs shorter than this are never called converged or not: their loss curve is a few points.
MIN_CONVERGENCE_STEPS = 100


def can_test(table: str, budget: str) -> bool:
    """Whether `table` at `budget` can test its claim (VERDICT_BUDGETS)."""
    return budget in VERDICT_BUDGETS.get(table, ())


def too_small_note(table: str, budget: str) -> str:
    """The verdict line of a table at a budget that cannot test its claim, with why."""
    why = NO_VERDICT_WHY.get(budget, f"the {budget} budget is not one that tests this claim")
    budgets = " and ".join(f"--budget={b}" for b in VERDICT_BUDGETS.get(table, ()))
    return f"verdict: {TOO_SMALL} ({budget}: {why}; {budgets or 'no budget'} can test it)"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Mean of `a` minus mean of `b` over seeds, judged against `factor` x the larger seed std.

    The difference is shown only when |mean difference| > factor x max(std a, std b) (sample
    stds over the seeds) and both sides have at least MIN_SEEDS seeds; otherwise it is
    'not shown', whatever its sign.
    """

    a: str
    b: str
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]
    factor: float = 1.0
    unit: str = " %"

    @property
    def difference(self) -> float:
        """mean(a) - mean(b)."""
        return float(np.mean(self.a_values) - np.mean(self.b_values))

    @property
    def spread(self) -> float | None:
        """The larger of the two seed stds (None with fewer than two seeds on a side)."""
        stds = [spread(list(v)) for v in (self.a_values, self.b_values)]
        return None if None in stds else max(stds)

    @property
    def seeds(self) -> int:
        """The smaller number of seeds of the two sides."""
        return min(len(self.a_values), len(self.b_values))

    def outcome(self, expected: str) -> str:
        """'shown', 'contradicted' or 'not shown' for the expected sign 'higher'/'lower' of a."""
        if expected not in ("higher", "lower"):
            raise ValueError(f"expected must be 'higher' or 'lower'; received {expected!r}")
        margin = self.spread
        if self.seeds < MIN_SEEDS or margin is None or abs(self.difference) <= (
                self.factor * margin):
            return "not shown"
        higher = self.difference > 0
        return "shown" if higher == (expected == "higher") else "contradicted"

    def text(self, expected: str) -> str:
        """'a m ± s vs b m ± s: +d pts (margin f x std = x): outcome' in one line."""

        def side(name: str, values: tuple[float, ...]) -> str:
            std = spread(list(values))
            return (f"{name} {np.mean(values):.1f}{self.unit}" +
                    ("" if std is None else f" ± {std:.1f}"))

        margin = self.spread
        if self.seeds < MIN_SEEDS:
            why = (f"{self.seeds} seed{'s' if self.seeds != 1 else ''}; a verdict needs "
                   f"≥ {MIN_SEEDS}")
        else:
            why = (f"{'>' if abs(self.difference) > self.factor * margin else '≤'} "
                   f"{self.factor:g} x the larger seed std {margin:.1f} = "
                   f"{self.factor * margin:.1f}")
        return (f"{side(self.a, self.a_values)} vs {side(self.b, self.b_values)}: "
                f"{self.difference:+.1f} pts ({why}; expected {expected}): "
                f"{self.outcome(expected)}")


def combine(outcomes: Sequence[str]) -> str:
    """A table's verdict from its claims' outcomes: 'reproduced' when every one is shown,
    'not reproduced' when one is contradicted, else 'not shown' ('undecided' if none)."""
    if not outcomes:
        return "undecided"
    if "contradicted" in outcomes:
        return "not reproduced"
    return "reproduced" if all(o == "shown" for o in outcomes) else "not shown"


def load_average() -> str:
    """The 1-minute load average and the cores, e.g. 'load 1.9 on 2 cores'."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return "load unknown"
    return f"load {load:.1f} on {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------
# A trained table's variants


@dataclasses.dataclass
class Runs:
    """A trained table's training at one budget: one config and dataset for every variant.

    `train` trains one variant (the config with another model) in runs_dir/NAME; `notes` are
    the data, the training and the machine/wall-time notes, once every variant has trained.
    """

    spec: Budget
    config: ml_collections.ConfigDict
    dataset: Any
    runs_dir: str
    trainer: Trainer
    started: float  # time.perf_counter() once the data was ready
    results: list[RunResult] = dataclasses.field(default_factory=list)
    table: str = "table"
    # Progress: run name -> relative cost (steps x forward MACs), set by `plan`.
    costs: dict[str, float] = dataclasses.field(default_factory=dict)
    finished: set[str] = dataclasses.field(default_factory=set)
    timed_work: float = 0.0
    timed_seconds: float = 0.0
    late_changes: dict[str, float | None] = dataclasses.field(default_factory=dict)
    budget: str = ""
    seeds_override: tuple[int, ...] | None = None  # --seeds: instead of the budget's
    load_at_start: str = dataclasses.field(default_factory=lambda: load_average())

    @property
    def steps(self) -> int:
        """Training steps of every run."""
        return _steps(self.config, self.dataset)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds every variant trains with (--seeds, else the budget's `seeds`, else
        config.seed)."""
        if self.seeds_override:
            return tuple(self.seeds_override)
        return tuple(self.spec.settings.get("seeds", (self.config.seed,)))

    @property
    def testable(self) -> bool:
        """Whether this table at this budget can test its claim (VERDICT_BUDGETS)."""
        return can_test(self.table, self.budget)

    def verdict_note(self, outcomes: Sequence[str], expected: str, rule: str,
                     measured: str) -> str:
        """The table's first note: its verdict by `rule` (or TOO_SMALL at a budget that
        cannot test it), what was expected and what was measured, spreads included."""
        head = (too_small_note(self.table, self.budget) if not self.testable
                else f"verdict: {combine(outcomes)}")
        return f"{head} — expected {expected}; rule: {rule}; measured: {measured}"

    def run_name(self, variant: str, seed: int) -> str:
        """The run directory of `variant` at `seed` (just the variant when there is one seed)."""
        return variant if len(self.seeds) == 1 else f"{variant}_seed{seed}"

    def plan(self, macs: Mapping[str, float]) -> None:
        """Announce every run (name -> forward MACs per image) for the table's progress/ETA."""
        self.costs = {name: float(m) * self.steps for name, m in macs.items()}
        self.finished = {name for name in self.costs if os.path.exists(
            os.path.join(self.runs_dir, name, "final_metrics.json"))}

    def progress_line(self, name: str) -> str:
        """'[table] run k/N name: x % of the table's work done, elapsed, ETA' (stdout)."""
        names = list(self.costs) or [name]
        index = names.index(name) + 1 if name in names else len(self.results) + 1
        total = sum(self.costs.values()) or 1.0
        left = sum(c for n, c in self.costs.items() if n not in self.finished)
        eta = (duration(left * self.timed_seconds / self.timed_work) if self.timed_work
               else "? (after the first run)")
        return (f"[{self.table}] run {index}/{len(names)} {name}: "
                f"{100.0 * (1.0 - left / total):.0f} % of the table's work done, elapsed "
                f"{duration(time.perf_counter() - self.started)}, table ETA {eta}")

    def train(self, name: str, model: str, module: Any = None, seed: int | None = None,
              **model_kwargs: Any) -> RunResult:
        """Train registry `model` built with `model_kwargs` (or the flax `module`) as `name`
        (with `seed`, default the config's); prints the table's progress and the run's
        late loss change."""
        run = self.config.copy_and_resolve_references()
        run.model = model
        run.model_kwargs = ml_collections.ConfigDict(model_kwargs)
        if seed is not None:
            run.seed = seed
        if run.progress:
            print(self.progress_line(name), flush=True)
        started = time.perf_counter()
        run_dir = os.path.join(self.runs_dir, name)
        result = finished_record(
            run_dir, run, self.steps,
            (lambda why: print(f"[{self.table}] {name}: retraining, {why}", flush=True))
            if run.progress else None)
        if result is None:
            result = self.trainer(run, self.dataset, run_dir, module)
        elif run.progress:
            print(f"[{self.table}] {name}: reusing its finished run's record in {run_dir}",
                  flush=True)
        seconds = time.perf_counter() - started
        if result.steps_run:
            add_run_seconds(run_dir, seconds)
        if result.steps_run and name in self.costs:
            self.timed_work += self.costs[name] * result.steps_run / self.steps
            self.timed_seconds += seconds
        self.finished.add(name)
        change = late_loss_change(result.loss_curve, self.steps)
        self.late_changes[name] = change
        if run.progress:
            print(f"[{self.table}] {name} done ({result.steps_run} steps in {seconds:.0f} s): "
                  f"{converged_text(change, self.steps)}", flush=True)
        self.results.append(result)
        return result

    def convergence_note(self) -> str:
        """The late-loss-change rule and how many runs met it."""
        changes = self.late_changes
        if self.steps < MIN_CONVERGENCE_STEPS:
            return (f"convergence: not judged ({self.steps}-step runs; the rule needs at least "
                    f"{MIN_CONVERGENCE_STEPS} steps)")
        met = [n for n, c in changes.items() if c is not None and abs(c) < CONVERGED_CHANGE]
        missed = [f"{n} ({100 * c:+.1f} %)" for n, c in changes.items()
                  if c is not None and abs(c) >= CONVERGED_CHANGE]
        unknown = [n for n, c in changes.items() if c is None]
        pct = round(100 * CONVERGED_FRACTION)
        note = (f"convergence (loss Δ column): the training loss changes by less than "
                f"{100 * CONVERGED_CHANGE:.0f} % over the last {pct} % of the steps in "
                f"{len(met)} of {len(changes)} runs")
        if missed:
            note += f"; not in {', '.join(missed)}"
        if unknown:
            note += f"; too few logged steps to tell for {', '.join(unknown)}"
        return note

    def notes(self) -> tuple[str, str, str]:
        """('dataset: ...', 'training: ...', 'machine: ...; wall time ...') of these runs.

        The last says when runs were resumed rather than trained.
        """
        what, how = describe_run(self.config, self.dataset, self.seeds)
        if "note" in self.spec.settings:  # why the budget is sized as it is
            how += f"; {self.spec.settings['note']}"
        estimate = self.spec.settings.get("estimate")
        note = (f"machine: {machine_description()}; wall time: estimated "
                f"{estimate or 'not estimated for this budget'}, measured "
                f"{duration(time.perf_counter() - self.started)} "
                f"({time.perf_counter() - self.started:.0f} s; {self.load_at_start} at the "
                f"start, {load_average()} at the end)")
        steps = _steps(self.config, self.dataset)
        ran = [r.steps_run for r in self.results if r.steps_run is not None]
        if len(ran) == len(self.results) and sum(ran) < steps * len(self.results):
            note += (f" for {sum(ran):,} of the {steps * len(self.results):,} training steps "
                     "(the rest were resumed from finished or interrupted runs in runs_dir)")
            total = sum(run_seconds(os.path.join(self.runs_dir, name)) for name in self.costs)
            if total >= 1.0:  # runs trained before train_seconds.json existed record none
                note += (f"; the runs' training time summed over every invocation that trained "
                         f"them: {duration(total)} ({total:.0f} s)")
        return what, how, note


RUN_SECONDS_FILE = "train_seconds.json"


def run_seconds(run_dir: str) -> float:
    """Wall seconds spent training the run in `run_dir`, summed over every invocation (0 if
    none recorded)."""
    try:
        with open(os.path.join(run_dir, RUN_SECONDS_FILE)) as f:
            return float(json.load(f)["seconds"])
    except FileNotFoundError:
        return 0.0


def add_run_seconds(run_dir: str, seconds: float) -> None:
    """Add one invocation's training seconds to `run_dir`'s total (written atomically), so a
    table resumed over several sessions states its whole training time."""
    record = {"seconds": run_seconds(run_dir) + seconds}
    os.makedirs(run_dir, exist_ok=True)
    temporary = os.path.join(run_dir, RUN_SECONDS_FILE + ".tmp")
    with open(temporary, "w") as f:
        json.dump(record, f)
    os.replace(temporary, os.path.join(run_dir, RUN_SECONDS_FILE))


def converged_text(change: float | None, steps: int | None = None) -> str:
    """How the training loss moved over the last 10 % of the steps, and the verdict (none for
    runs of fewer than MIN_CONVERGENCE_STEPS `steps`)."""
    pct = round(100 * CONVERGED_FRACTION)
    if steps is not None and steps < MIN_CONVERGENCE_STEPS:
        return f"a {steps}-step run: convergence not judged"
    if change is None:
        return f"loss change over the last {pct} % of steps: too few logged steps to tell"
    ok = abs(change) < CONVERGED_CHANGE
    return (f"loss change over the last {pct} % of steps {-100 * change:+.1f} % "
            f"({'converged' if ok else 'NOT converged'}: the rule is < "
            f"{100 * CONVERGED_CHANGE:.0f} %)")


def start_runs(budgets: Mapping[str, Budget], budget: str, runs_dir: str, *,
               overrides: str | None = None, data_dir: str | None = None,
               trainer: Trainer = train_variant, table: str = "table",
               seeds: Sequence[int] | None = None) -> Runs:
    """The Runs of a table at `budget` (one of `budgets`): its config and data, no run yet;
    `seeds` replaces the budget's seeds."""
    check_budget(budget)
    load = load_average()
    spec = budgets[budget]
    config = training_config(spec, overrides, data_dir)
    dataset = budget_dataset(config, spec)
    return Runs(spec, config, dataset, runs_dir, trainer, time.perf_counter(), table=table,
                budget=budget, seeds_override=tuple(seeds) if seeds else None,
                load_at_start=load)


def percent(fraction: float | None) -> float | None:
    """100 * fraction, None staying None."""
    return None if fraction is None else 100.0 * fraction


# ---------------------------------------------------------------------------------------------
# Throughput with the loop's own steps


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Measured images/s; a step that cannot run has None and its error message."""

    train_ips: float | None
    infer_ips: float | None
    error: str | None = None


def _loop_program(config: ml_collections.ConfigDict, task: train.Task,
                  total_steps: int) -> tuple[Any, Callable, Callable]:
    """(initial state, jitted train step (donates the state), jitted eval step) of the loop.

    The loop's own program (`train.build_program`), its pure steps jit-compiled for the
    default device: the timing feeds whole batches that need not split over a mesh.
    """
    program = train.build_program(config, task, total_steps=total_steps, steps_per_epoch=1)
    state = jax.jit(program.init_fn)(program.rng)
    return (state, jax.jit(program.train_fn, donate_argnums=0), jax.jit(program.eval_fn))


def measure_throughput(model: str, input_shape: Sequence[int], num_classes: int, batch: int,
                       steps: int = 1) -> Throughput:
    """Inference, then training, images/s of registry `model` on random (H, W, C) inputs.

    Times `steps` calls of the training loop's own jit-compiled eval step and train step
    (momentum SGD) after one compiling call each; data already on the device, so no input
    pipeline. A failing train step (e.g. an op without a gradient) keeps the inference rate.
    """
    rng = np.random.default_rng(0)
    x = rng.random((batch, *input_shape), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int32)
    dataset = data.ArrayDataset("random", x, y, x, y, num_classes)
    config = train.default_config()
    config.model, config.optimizer, config.normalize = model, "momentum", False
    task = classification.make_task(train.resolve_platform(config), dataset)
    state, jit_train, jit_eval = _loop_program(config, task, steps + 1)
    batch_arrays = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    eval_arrays = {**batch_arrays, "mask": jnp.ones((batch,), jnp.float32)}

    def rate(step: Callable[[], Any]) -> float:
        jax.block_until_ready(step())  # compile
        return images_per_second(step, steps, batch)

    holder = {"state": state}

    def train_once():
        holder["state"], metrics = jit_train(holder["state"], batch_arrays)
        return metrics

    infer_rate = rate(lambda: jit_eval(holder["state"], eval_arrays))
    try:
        train_rate = rate(train_once)
    except Exception as error:  # noqa: BLE001  (report it in the table, keep the other rate)
        return Throughput(None, infer_rate, f"{type(error).__name__}: {str(error)[:160]}")
    return Throughput(train_rate, infer_rate)


# ---------------------------------------------------------------------------------------------
# Estimating a table's wall time without training it

# Training images/s of resnet20_cifar (batch 128, 32x32) on the quiet 2-core CPU machine: the
# reference that scales rates measured on a busy machine to a quiet one.
QUIET_RESNET20_IPS = 270.0


@dataclasses.dataclass
class StepTimer:
    """A Trainer that times `steps` training steps of each run's model instead of training it.

    Each model is timed between two timings of resnet20_cifar (batch and optimiser of the
    run), so a busy machine's load, which changes from minute to minute, cancels out of the
    ratio. `rates` maps run name -> (training images/s, resnet20_cifar's images/s around it,
    the run's steps, its batch); identical models (other seeds) are timed once. Rates are
    of the jit-compiled loop step on a random batch (no input pipeline).
    """

    steps: int = 3
    rates: dict[str, tuple[float, float, int, int]] = dataclasses.field(default_factory=dict)
    _cache: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    _reference: Callable[[int], float] | None = None

    def __call__(self, config: ml_collections.ConfigDict, dataset: Any, workdir: str,
                 model: Any = None) -> RunResult:
        key = repr((config.model, config.model_kwargs.to_dict(), model))
        if key not in self._cache:
            if self._reference is None:
                reference = config.copy_and_resolve_references()
                reference.model, reference.model_kwargs = "resnet20_cifar", {}
                self._reference = timed_train_step(reference, (32, 32, 3), 10)
            before = self._reference(self.steps)
            rate = timed_train_step(config, dataset.image_shape, dataset.num_classes,
                                    model)(self.steps)
            after = self._reference(self.steps)
            self._cache[key] = (rate, (before + after) / 2)
        self.rates[os.path.basename(workdir)] = (*self._cache[key], _steps(config, dataset),
                                                 config.batch_size)
        return RunResult({}, [], 0)


def timed_train_step(config: ml_collections.ConfigDict, image_shape: Sequence[int],
                     num_classes: int, model: Any = None) -> Callable[[int], float]:
    """A function n -> training images/s over n calls of the loop's train step for
    config.model (or `model`) at config.batch_size on random images (compiled here once)."""
    batch = config.batch_size
    rng = np.random.default_rng(0)
    x = rng.random((batch, *image_shape), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int32)
    dataset = data.ArrayDataset("random", x, y, x[:1], y[:1], num_classes)
    task = classification.make_task(train.resolve_platform(config), dataset, model=model)
    state, jit_train, _ = _loop_program(config, task, 1_000_000)
    arrays = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    holder = {"state": jit_train(state, arrays)[0]}  # compile

    def train_once():
        holder["state"], metrics = jit_train(holder["state"], arrays)
        return metrics

    def rate(steps: int) -> float:
        return images_per_second(train_once, steps, batch)

    return rate


def estimate_lines(table: str, timer: StepTimer) -> list[str]:
    """Per-run measured rates and the table's wall time extrapolated to the quiet machine:
    each run's rate x QUIET_RESNET20_IPS / resnet20_cifar's rate measured around it."""
    lines, total = [], 0.0
    for name, (rate, reference, steps, batch) in timer.rates.items():
        quiet = rate * QUIET_RESNET20_IPS / reference
        seconds = steps * batch / quiet
        total += seconds
        lines.append(f"{name}: {rate:,.0f} img/s measured (resnet20_cifar {reference:,.0f}), "
                     f"{quiet:,.0f} img/s quiet -> {duration(seconds)} for {steps:,} steps "
                     f"of {batch}")
    lines.append(f"[{table}] estimated training time on a quiet machine: {duration(total)} "
                 f"(resnet20_cifar = {QUIET_RESNET20_IPS:.0f} img/s there; + data loading and "
                 "evaluation)")
    return lines
