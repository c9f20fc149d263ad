"""Face verification and recognition: train, people-fold validation, evaluate, recognize.

  python -m experiments.faces train --workdir=W [--config=experiments/configs/faces_att.py]
  python -m experiments.faces folds --workdir=W [--config=...] [--folds=4]
  python -m experiments.faces evaluate --workdir=W [--data=DIR] [--pairs=pairs.txt]
  python -m experiments.faces recognize --workdir=W --database=DIR --image=PATH

`train` trains the faces task (jaxcnn.tasks.faces) through jaxcnn.train.train_and_evaluate.
`folds` is the validation used to choose every setting: k-fold cross-validation over the
config's training people (4 folds of 5 of s1-s20), each fold trained on the other folds'
people and evaluated on its own; it prints each figure's mean +- std over the folds for the
model and the three baselines, and the mean of the folds' verification thresholds (the value
for task.threshold). `evaluate` embeds the people of --data (default: the run's held-out
people; a folder holding only new people works) and reports the model beside raw pixels,
Eigenfaces and Fisherfaces (fitted on the run's training people) on the same pairs and draws,
with a ROC plot. `recognize` enrols the first image of each person folder of --database and
names --image's person, or "not recognised", at the run's threshold (task.threshold, chosen on
validation people) and says where the threshold came from.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags

from experiments import common
from jaxcnn import faces, tasks, train
from jaxcnn.data import faces as face_data
from jaxcnn.tasks import faces as faces_task

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "faces_att.py"),
    "Config file[:overrides] (train and folds; evaluate/recognize read the workdir's).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (folds: one per fold below).")
_DATA = flags.DEFINE_string("data", None, "train/folds: the identity folder (sets "
                            "config.dataset and task.train_data); evaluate: the folder whose "
                            "people are evaluated.")
_FOLDS = flags.DEFINE_integer("folds", 4, "folds: number of people-folds.")
_PAIRS = flags.DEFINE_string("pairs", None, "evaluate: an LFW-format pairs file to use "
                             "instead of the generated pairs.")
_DATABASE = flags.DEFINE_string("database", None, "recognize: folder of people to enrol; "
                                "the first image (natural order) of each is enrolled.")
_IMAGE = flags.DEFINE_string("image", None, "recognize: the query image.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "recognize: distance threshold (default: "
                                "the run's task.threshold).")

REPORT_FILE = "faces_eval.json"
FOLDS_FILE = "folds.json"
METHODS = ("model", *faces.BASELINES)


def _with_data(config: ConfigDict) -> ConfigDict:
    if _DATA.value:
        config.dataset = f"faces:{_DATA.value}"
        config.task.train_data = _DATA.value
    return config


def run_train(config: ConfigDict, workdir: str) -> dict[str, float]:
    """Train one faces run; print its held-out figures in words."""
    data = faces_task.dataset_from_config(config)
    print(f"train people: {len(data.train.names)} ({data.num_train} images); evaluated "
          f"people: {len(data.eval.names)} ({data.num_eval} images)", flush=True)
    start = time.perf_counter()
    result = train.train_and_evaluate(config, workdir, faces_task.build)
    print(f"trained {result.steps_run} steps in {time.perf_counter() - start:.1f} s; on the "
          f"evaluated people, model: verification (10-fold pairs) "
          f"{100 * result.metrics['model_verification_10fold_accuracy']:.1f} %, one-shot "
          f"identification {100 * result.metrics['model_one_shot_accuracy']:.1f} %", flush=True)
    return result.metrics


def fold_people(people: list[str], num_folds: int) -> list[list[str]]:
    """`people` cut into `num_folds` consecutive groups of (nearly) equal size."""
    if not 2 <= num_folds <= len(people):
        raise train.UsageError(f"--folds must be in [2, {len(people)}] for {len(people)} "
                               f"training people; received {num_folds}")
    return [list(part) for part in np.array_split(np.array(people, object), num_folds)]


def run_folds(config: ConfigDict, workdir: str, num_folds: int) -> dict:
    """Cross-validation over the training people; mean and std of every figure."""
    settings = faces_task.settings(config)
    root = settings["train_data"] or faces_task.data_folder(config)
    people = face_data.parse_people(settings["train_people"], face_data.list_people(root))
    per_fold = []
    for k, held in enumerate(fold_people(people, num_folds)):
        fold = copy.deepcopy(config)
        fold.dataset, fold.task.train_data = f"faces:{root}", root
        fold.task.train_people = ",".join(p for p in people if p not in held)
        fold.task.eval_people = ",".join(held)
        fold.task.threshold, fold.task.threshold_source = 0.0, ""
        path = os.path.join(workdir, f"fold{k}")
        done = os.path.join(path, "final_metrics.json")
        if os.path.isfile(done):
            with open(done) as f:
                per_fold.append(json.load(f))
        else:
            print(f"fold {k}: validating on {held[0]}..{held[-1]}", flush=True)
            per_fold.append(run_train(fold, path))
    keys = [k for k in per_fold[0] if k != "step"]
    summary = {k: {"mean": float(np.mean([m[k] for m in per_fold])),
                   "std": float(np.std([m[k] for m in per_fold]))} for k in keys}
    print(f"{num_folds} people-folds of {people[0]}..{people[-1]} (mean +- std over folds):")
    for method in METHODS:
        print(f"  {method:<12}" + "  ".join(
            f"{label} {100 * summary[f'{method}_{key}']['mean']:.1f} +- "
            f"{100 * summary[f'{method}_{key}']['std']:.1f} %"
            for label, key in (("verification", "verification_10fold_accuracy"),
                               ("one-shot", "one_shot_accuracy"),
                               ("open-set rejection", "open_set_rejection"))
            if f"{method}_{key}" in summary))
    threshold = summary["model_pairs_threshold"]
    print(f"  threshold for task.threshold: {threshold['mean']:.4f} +- {threshold['std']:.4f} "
          f"(each fold's best on its validation pairs)")
    enrolled, impostors = faces.open_set_sizes(len(people) // num_folds)
    result = {"folds": per_fold, "summary": summary, "people": people,
              "open_set": f"{enrolled} enrolled + {impostors} impostors per draw"}
    with open(os.path.join(workdir, FOLDS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    return result


def load_run(workdir: str):
    """(config, task, step, embed): the run's config and task, the checkpoint's step and a
    jit-compiled images -> embeddings function of its latest checkpoint (tasks.load_run)."""
    run = tasks.load_run(workdir)

    def embed(images: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([np.asarray(run.predict(images[i : i + batch]))
                               for i in range(0, len(images), batch)])

    return run.config, run.task, run.step, embed


def _pairs_from_file(path: str, data: face_data.IdentityImages) -> dict:
    listed, num_folds = faces.read_pairs_file(path)
    pairs = np.array([(data.image_number(a, i), data.image_number(b, j))
                      for a, i, b, j in listed])
    return {"pairs": pairs, "same": np.array([a == b for a, _, b, _ in listed]),
            "folds": np.arange(len(pairs)) * num_folds // len(pairs), "num_folds": num_folds}


def _plot_roc(reports: dict[str, dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, report in reports.items():
        roc = report["verification"]["roc"]
        ax.plot(roc["far"], roc["val"], label=f"{name} "
                f"({100 * report['verification']['accuracy_mean']:.1f} %)",
                lw=2 if name == "model" else 1)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("validation rate (VAL)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_line(name: str, report: dict) -> str:
    v = report["verification"]
    vals = "  ".join(f"VAL@FAR={far} {100 * f['val']:.1f} %" for far, f in
                     v["val_at_far"].items())
    line = (f"{name:<12} verification (10-fold pairs) {100 * v['accuracy_mean']:.1f} +- "
            f"{100 * v['accuracy_std']:.1f} %  {vals}\n{'':<12} one-shot identification "
            f"{100 * report['one_shot']['accuracy_mean']:.1f} +- "
            f"{100 * report['one_shot']['accuracy_std']:.1f} %")
    if "open_set" in report:
        o = report["open_set"]
        line += (f"  open-set rejection {100 * o['rejection_mean']:.1f} +- "
                 f"{100 * o['rejection_std']:.1f} % at {100 * o['acceptance']:.0f} % "
                 f"acceptance ({o['enrolled']} enrolled + {o['impostors']} impostors, "
                 f"{o['draws']} draws)")
    if "at_run_threshold" in report:
        t = report["at_run_threshold"]
        line += (f"\n{'':<12} at the run's threshold {t['threshold']:.4f}: accuracy "
                 f"{100 * t['accuracy']:.1f} %, VAL {100 * t['val']:.1f} %, FAR "
                 f"{100 * t['far']:.1f} %")
    return line


def run_evaluate(workdir: str) -> dict:
    """Every figure of the model and the baselines on --data's people (or the run's)."""
    config, task, step, embed = load_run(workdir)
    settings = faces_task.settings(config)
    if _DATA.value:
        other = copy.deepcopy(config)
        other.dataset = f"faces:{_DATA.value}"
        other.task.train_data = settings["train_data"] or faces_task.data_folder(config)
        dataset = faces_task.dataset_from_config(other)
    else:
        dataset = task.dataset
    data = dataset.eval
    start = time.perf_counter()
    embeddings = embed(data.images)
    seconds = time.perf_counter() - start
    pairs = _pairs_from_file(_PAIRS.value, data) if _PAIRS.value else {}
    baselines = faces.fit_baselines(dataset.train.images, dataset.train.labels,
                                    settings["eigenfaces"])
    reports = faces.held_out_reports(embeddings, data.images, data.labels, baselines, seed=0,
                                     threshold=settings["threshold"] or None, **pairs)
    roc_path = os.path.join(workdir, "roc.png")
    _plot_roc(reports, roc_path, f"Verification ROC, {len(data.names)} people never trained "
              f"on ({data.names[0]}..{data.names[-1]})")
    print(f"checkpoint step {step}; {len(data.names)} evaluated people, {len(data.images)} "
          f"images, {reports['model']['verification']['num_pairs']} pairs; embedded in "
          f"{seconds:.2f} s; baselines fitted on the {len(dataset.train.names)} training people")
    for name, report in reports.items():
        print(_summary_line(name, report))
    print(f"ROC curve: {roc_path}")
    saved = {name: {**report, "verification": {
        k: v for k, v in report["verification"].items() if k != "roc"}}
        for name, report in reports.items()}
    saved.update(step=step, people=list(data.names), metrics=faces.flat_metrics(reports),
                 pairs_file=_PAIRS.value)
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
        json.dump(saved, f, indent=2, default=float)
    return saved


def run_recognize(workdir: str) -> str:
    if not (_DATABASE.value and _IMAGE.value):
        raise app.UsageError("recognize needs --database=DIR and --image=PATH")
    config, _, _, embed = load_run(workdir)
    settings = faces_task.settings(config)
    threshold, source = faces_task.recognition_threshold(settings, _THRESHOLD.value)
    size, channels = tuple(config.image_size), settings["channels"]
    gallery = face_data.read_identity_folder(_DATABASE.value, size, channels, min_images=1)
    first = np.array([np.flatnonzero(gallery.labels == i)[0] for i in range(len(gallery.names))])
    query = face_data.read_image(_IMAGE.value, size, channels)
    database = faces.enroll(embed(gallery.images[first]), gallery.names)
    name, distance = faces.recognize(embed(query[None])[0], database, threshold)
    line = f"{name}  (distance {distance:.4f}, threshold {threshold:.4f}: {source})"
    print(line)
    return line


def main(argv):
    common.quiet_logging()
    modes = ("train", "folds", "evaluate", "recognize")
    if len(argv) != 2 or argv[1] not in modes:
        raise app.UsageError(f"usage: python -m experiments.faces {'|'.join(modes)} "
                             "--workdir=DIR [...]")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    try:
        if argv[1] == "train":
            common.maybe_initialize_distributed()
            run_train(_with_data(_CONFIG.value), _WORKDIR.value)
        elif argv[1] == "folds":
            run_folds(_with_data(_CONFIG.value), _WORKDIR.value, _FOLDS.value)
        elif argv[1] == "evaluate":
            run_evaluate(_WORKDIR.value)
        else:
            run_recognize(_WORKDIR.value)
    except (train.RunError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    app.run(main)
