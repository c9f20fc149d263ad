"""Rerun the recorded figures of results/manifest.toml that fit a time budget and compare.

    ./launch.sh run check_results --budget_minutes=10              # the entries that fit
    ./launch.sh run check_results --budget_minutes=10 --only=demo,lenet5_table
    ./launch.sh run check_results --list                           # entries, times, no runs

Each manifest run (`[[runs]]`) has shell commands with the placeholders {workdir} (a fresh
directory per seed under --runs_dir) and {seed}; its figures (`[[runs.figures]]`) say where
the value is read (`file` + `key` for JSON/JSON lines, `csv_row` + `csv_column`, or
`regex` with `group`; `file` defaults to the commands' output log) and what was recorded.
A figure over several seeds is the mean of the per-seed values. A figure is within tolerance
when |now - recorded| <= `tolerance` (strings: equal); a `single_seed` figure has no
tolerance (its rerun is shown, not judged) unless it states a claim (`at_least` /
`at_most`), which is checked. Prints one table (figure, recorded, now, tolerance, within?)
and exits 1 when a figure is outside, a claim fails, a command fails or a value cannot be
read. The checker itself runs under launch.sh, so it runs each `./launch.sh run SCRIPT` line
as `python -m experiments.SCRIPT` with its own interpreter (no second set-up).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags

try:  # Python 3.11+; on 3.10 the tomli backport (same API) if installed
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - depends on the interpreter
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join("results", "manifest.toml")
# Entries marked needs = ["data"] read ../shared/data beside the checkout.
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
# Entries under this many minutes on 2 quiet CPU cores form the quick set (the slow tests).
QUICK_MINUTES = 2.0

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run as a script, so that tests can import
    this module beside other experiments that define flags of the same names)."""
    flags.DEFINE_string("manifest", MANIFEST, "The manifest (TOML).")
    flags.DEFINE_float("budget_minutes", None, "Run the entries whose expected minutes "
                       "(2 quiet CPU cores) fit in this total, in manifest order.")
    flags.DEFINE_list("only", None, "Only these run ids (comma-separated).")
    flags.DEFINE_string("runs_dir", "runs/check_results", "Where the reruns' workdirs go "
                        "(RUNS_DIR/ID/seedN); emptied per entry.")
    flags.DEFINE_bool("gpu", False, "Also run entries that need a GPU.")
    flags.DEFINE_bool("list", False, "List the entries and their expected minutes; run "
                      "nothing.")


class ManifestError(ValueError):
    """A manifest that does not say what the checker needs."""


# ---------------------------------------------------------------------------------------------
# The manifest


def load_manifest(path: str) -> dict[str, Any]:
    """The manifest at `path`, checked (ManifestError naming the entry and what is wrong)."""
    if not os.path.isfile(path):
        raise ManifestError(f"no manifest at {path}")
    if tomllib is None:
        raise ManifestError("reading the TOML manifest needs Python >= 3.11 or the tomli "
                            "package (pip install tomli)")
    with open(path, "rb") as f:
        try:
            manifest = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ManifestError(f"{path}: not valid TOML: {error}") from None
    check_manifest(manifest)
    return manifest


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """ManifestError unless every run and figure has the fields the checker reads."""
    runs = manifest.get("runs")
    if not runs:
        raise ManifestError("the manifest has no [[runs]]")
    ids = [run.get("id") for run in runs]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"run ids must be unique; received {ids}")
    for run in runs:
        where = f"run {run.get('id')!r}"
        for key, kind in (("id", str), ("commands", list), ("seeds", list),
                          ("minutes", (int, float)), ("commit", str), ("machine", str),
                          ("figures", list)):
            if not isinstance(run.get(key), kind):
                raise ManifestError(f"{where}: field {key!r} missing or not a "
                                    f"{getattr(kind, '__name__', 'number')}")
        for figure in run["figures"]:
            check_figure(figure, f"{where}, figure {figure.get('name')!r}",
                         len(run["seeds"]))


def check_figure(figure: Mapping[str, Any], where: str, seeds: int) -> None:
    """ManifestError unless `figure` names a value, how to read it and how to judge it."""
    if "name" not in figure or "recorded" not in figure:
        raise ManifestError(f"{where}: needs 'name' and 'recorded'")
    parsers = [key for key in ("key", "csv_column", "regex") if key in figure]
    if len(parsers) != 1:
        raise ManifestError(f"{where}: needs exactly one of key, csv_column, regex; "
                            f"received {parsers}")
    if "csv_column" in figure and not isinstance(figure.get("csv_row"), dict):
        raise ManifestError(f"{where}: csv_column needs csv_row = {{column = value}}")
    judged = ("tolerance" in figure) + bool(figure.get("single_seed"))
    if judged != 1:
        raise ManifestError(f"{where}: needs either tolerance or single_seed = true")
    if figure.get("single_seed") and seeds != 1:
        raise ManifestError(f"{where}: single_seed but the run lists {seeds} seeds")
    if seeds > 1 and isinstance(figure["recorded"], (int, float)):
        per_seed = figure.get("per_seed")
        if not isinstance(per_seed, list) or len(per_seed) != seeds:
            raise ManifestError(f"{where}: a figure over {seeds} seeds lists per_seed "
                                "(one value per seed, the tolerance's source)")


def select_runs(manifest: Mapping[str, Any], budget_minutes: float | None,
                only: Sequence[str] | None = None, gpu: bool = False
                ) -> tuple[list[dict], list[tuple[str, str]]]:
    """(runs to do, [(id, why skipped)]): in manifest order, those in `only` (all if None)
    whose minutes still fit `budget_minutes` (no limit if None), GPU runs only if `gpu`,
    runs that need ../shared/data only where it is."""
    runs = manifest["runs"]
    if only:
        unknown = sorted(set(only) - {run["id"] for run in runs})
        if unknown:
            raise ManifestError(f"--only: unknown run ids {unknown}; valid: "
                                f"{', '.join(run['id'] for run in runs)}")
    chosen, skipped, left = [], [], budget_minutes
    for run in runs:
        if only and run["id"] not in only:
            continue
        if "gpu" in run.get("needs", ()) and not gpu:
            skipped.append((run["id"], "needs a GPU (--gpu)"))
        elif "data" in run.get("needs", ()) and not os.path.isdir(SHARED_DATA):
            skipped.append((run["id"], f"needs the shared data at {SHARED_DATA}"))
        elif left is not None and run["minutes"] > left:
            skipped.append((run["id"], f"{run['minutes']:g} min > the {left:g} min left"))
        else:
            chosen.append(run)
            left = None if left is None else left - run["minutes"]
    return chosen, skipped


# ---------------------------------------------------------------------------------------------
# Running and reading


def fill(text: str, workdir: str, seed: int) -> str:
    """`text` with {workdir} and {seed} replaced (other braces are left alone)."""
    return text.replace("{workdir}", workdir).replace("{seed}", str(seed))


def direct(command: str) -> str:
    """A `./launch.sh run SCRIPT ...` line as `PYTHON -m experiments.SCRIPT ...` (this
    interpreter); other lines unchanged."""
    match = re.match(r"\s*\./launch\.sh run (\S+)(.*)", command, re.S)
    if not match:
        return command
    return f"{shlex.quote(sys.executable)} -m experiments.{match.group(1)}{match.group(2)}"


def run_commands(run: Mapping[str, Any], workdir: str, seed: int) -> tuple[bool, str]:
    """Run the run's prepare and commands for `seed` in the repository root, output appended
    to workdir/output.log; (all succeeded?, the failing command's last output lines)."""
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, "output.log")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for command in (*run.get("prepare", ()), *run["commands"]):
        line = direct(fill(command, workdir, seed))
        with open(log, "a") as out:
            out.write(f"$ {line}\n")
            out.flush()
            done = subprocess.run(line, shell=True, cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, check=False)
        if done.returncode:
            with open(log) as f:
                tail = f.read().splitlines()[-5:]
            return False, f"exit {done.returncode}: {line}\n  " + "\n  ".join(tail)
    return True, ""


def _number_or_text(text: str) -> float | str:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text.strip()


def _json_value(data: Any, path: str, where: str) -> Any:
    value = data
    for part in path.split("/"):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{where}: no key {part!r} on the path {path!r}")
    return value


def read_figure(figure: Mapping[str, Any], workdir: str, seed: int) -> Any:
    """The figure's value in `workdir` (KeyError/FileNotFoundError naming what is missing)."""
    path = fill(figure.get("file", "{workdir}/output.log"), workdir, seed)
    if not os.path.isabs(path):
        path = os.path.join(ROOT, path)
    with open(path) as f:
        text = f.read()
    if "key" in figure:
        if path.endswith(".jsonl"):  # the last line that has the key
            for line in reversed(text.splitlines()):
                try:
                    return _json_value(json.loads(line), figure["key"], path)
                except (KeyError, IndexError, ValueError):
                    continue
            raise KeyError(f"{path}: no line with {figure['key']!r}")
        return _json_value(json.loads(text), figure["key"], path)
    if "csv_column" in figure:
        for row in csv.DictReader(text.splitlines()):
            if all(row.get(k) == str(v) for k, v in figure["csv_row"].items()):
                return _number_or_text(row[figure["csv_column"]])
        raise KeyError(f"{path}: no row with {figure['csv_row']}")
    match = re.search(figure["regex"], text, re.M)
    if not match:
        raise KeyError(f"{path}: no match for {figure['regex']!r}")
    return _number_or_text(match.group(figure.get("group", 1)))


def judge(figure: Mapping[str, Any], now: Any) -> tuple[str, bool]:
    """(verdict text, ok?) of value `now` against the figure's recorded value and claims."""
    recorded = figure["recorded"]
    if isinstance(recorded, str) or isinstance(now, str):
        ok = str(now) == str(recorded)
        return ("equal" if ok else "DIFFERENT"), ok
    claims = []
    if "at_least" in figure:
        claims.append((now >= figure["at_least"], f">= {figure['at_least']:g}"))
    if "at_most" in figure:
        claims.append((now <= figure["at_most"], f"<= {figure['at_most']:g}"))
    failed = [text for holds, text in claims if not holds]
    if failed:
        return f"CLAIM FAILS ({', '.join(failed)})", False
    if figure.get("single_seed"):
        return "single seed: not judged" + (" (claim holds)" if claims else ""), True
    # The tolerance is compared with a little slack for the recorded value's rounding.
    ok = abs(now - recorded) <= figure["tolerance"] + 1e-9 * max(1.0, abs(recorded))
    return ("yes" if ok else "OUTSIDE"), ok


def check_run(run: Mapping[str, Any], runs_dir: str) -> list[dict[str, Any]]:
    """Rerun one manifest run over its seeds and judge each of its figures: rows of
    (figure, recorded, now, tolerance, verdict, ok)."""
    per_seed: dict[str, list[Any]] = {figure["name"]: [] for figure in run["figures"]}
    errors: dict[str, str] = {}
    for seed in run["seeds"]:
        workdir = os.path.abspath(os.path.join(runs_dir, run["id"], f"seed{seed}"))
        if os.path.isdir(workdir):
            shutil.rmtree(workdir)
        ok, failure = run_commands(run, workdir, seed)
        for figure in run["figures"]:
            if not ok:
                errors.setdefault(figure["name"], f"command failed: {failure}")
                continue
            try:
                per_seed[figure["name"]].append(read_figure(figure, workdir, seed))
            except (OSError, KeyError, IndexError, ValueError) as error:
                errors.setdefault(figure["name"], f"not read: {error}")
    rows = []
    for figure in run["figures"]:
        name, values = figure["name"], per_seed[figure["name"]]
        tolerance = ("single seed" if figure.get("single_seed") else
                     f"{figure['tolerance']:g}")
        if name in errors:
            rows.append(_row(run, figure, None, tolerance, f"ERROR: {errors[name]}", False))
            continue
        now = values[0] if isinstance(values[0], str) else sum(values) / len(values)
        verdict, ok = judge(figure, now)
        rows.append(_row(run, figure, now, tolerance, verdict, ok))
    return rows


def _row(run, figure, now, tolerance, verdict, ok) -> dict[str, Any]:
    return {"run": run["id"], "figure": figure["name"], "recorded": figure["recorded"],
            "now": now, "tolerance": tolerance, "verdict": verdict, "ok": ok}


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison as a markdown table: figure, recorded, now, tolerance, within?"""
    lines = ["| run | figure | recorded | now | tolerance | within tolerance? |",
             "|---|---|---:|---:|---:|---|"]
    for row in rows:
        verdict = row["verdict"].splitlines()[0]
        lines.append(f"| {row['run']} | {row['figure']} | {_show(row['recorded'])} | "
                     f"{_show(row['now'])} | {row['tolerance']} | {verdict} |")
    return "\n".join(lines)


def list_lines(manifest: Mapping[str, Any]) -> list[str]:
    """One line per run (id, minutes, seeds, figures, quick?) and the total minutes."""
    lines, total = [], 0.0
    for run in manifest["runs"]:
        if "gpu" not in run.get("needs", ()):
            total += run["minutes"]
        quick = " quick" if run["minutes"] <= QUICK_MINUTES else ""
        needs = f" needs {','.join(run['needs'])}" if run.get("needs") else ""
        lines.append(f"{run['id']}: {run['minutes']:g} min, seeds {run['seeds']}, "
                     f"{len(run['figures'])} figure(s){quick}{needs}")
    lines.append(f"total: {total:g} min on 2 quiet CPU cores, GPU entries not included")
    return lines


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        manifest = load_manifest(FLAGS.manifest)
        selected = select_runs(manifest, FLAGS.budget_minutes, FLAGS.only, FLAGS.gpu)
    except ManifestError as error:  # one line and exit 2, like every script's usage errors
        raise app.UsageError(str(error)) from None
    if FLAGS.list:
        print("\n".join(list_lines(manifest)))
        return
    if FLAGS.budget_minutes is None and not FLAGS.only:
        raise app.UsageError("give --budget_minutes=N (or --only=IDS, or --list)")
    chosen, skipped = selected
    rows = []
    for run in chosen:
        started = time.perf_counter()
        print(f"[check_results] {run['id']} (expected {run['minutes']:g} min) ...", flush=True)
        rows.extend(check_run(run, FLAGS.runs_dir))
        print(f"[check_results] {run['id']} took {(time.perf_counter() - started) / 60:.1f} "
              "min", flush=True)
    print(format_rows(rows))
    for run_id, why in skipped:
        print(f"skipped {run_id}: {why}")
    bad = [row for row in rows if not row["ok"]]
    for row in bad:
        print(f"{row['run']} / {row['figure']}: {row['verdict']}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    from experiments import common

    define_flags()
    common.run(main)
