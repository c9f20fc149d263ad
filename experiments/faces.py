"""Face verification and recognition with triplet-trained embeddings.

  python -m experiments.faces train --data=../shared/data/att_faces --workdir=/tmp/faces
  python -m experiments.faces evaluate --workdir=/tmp/faces [--data=DIR] [--people=s21-s30]
      [--pairs=pairs.txt]
  python -m experiments.faces recognize --workdir=/tmp/faces --database=DIR --image=PATH

`train` trains config.model + an L2-normalised embedding with the mined triplet loss
through jaxcnn.train.train_and_evaluate on config.task.train_people. `evaluate` embeds
people never seen in training and reports, for the model and for the raw-pixel L2 baseline:
the verification protocol (10-fold accuracy, VAL@FAR, ROC curve PNG), one-shot recognition
and open-set rejection. `recognize` enrols one image per person folder of --database and
prints the name of --image's person, or "not recognised", with the distance.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags

from experiments import common
from jaxcnn import faces, train
from jaxcnn.data import faces as face_data

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "faces_att.py"),
    "Config file[:overrides] (train only; evaluate/recognize read the workdir's).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_DATA = flags.DEFINE_string("data", None, "Identity-folder root (one folder per person).")
_PEOPLE = flags.DEFINE_string("people", None, "evaluate: people to evaluate, e.g. s21-s30 "
                              "(default: the config's task.eval_people).")
_PAIRS = flags.DEFINE_string("pairs", None, "evaluate: an LFW-format pairs file to use "
                             "instead of the generated pairs.")
_SEED = flags.DEFINE_integer("seed", 0, "evaluate: seed of the pairs and the draws.")
_DATABASE = flags.DEFINE_string("database", None, "recognize: folder of people to enrol; "
                                "the first image (natural order) of each is enrolled.")
_IMAGE = flags.DEFINE_string("image", None, "recognize: the query image.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "recognize: distance threshold (default: "
                                "the verification threshold `evaluate` saved).")

CONFIG_FILE = "faces_config.json"
REPORT_FILE = "faces_eval.json"


def _save_config(config: ConfigDict, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def _load_config(workdir: str) -> ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run `experiments.faces train` first")
    with open(path) as f:
        saved = json.load(f)
    config = train.default_config()
    for key, value in saved.items():
        if isinstance(value, dict):
            config[key] = ConfigDict(value)
        else:
            config[key] = tuple(value) if isinstance(value, list) else value
    return config


def _data_root(config: ConfigDict) -> str:
    root = _DATA.value or config.dataset.removeprefix("faces:")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data: identity folder {root!r} does not exist")
    return root


def run_train(config: ConfigDict, workdir: str) -> None:
    root = _DATA.value or config.dataset.removeprefix("faces:")
    config.dataset = f"faces:{root}"
    options = faces.task_config(config)
    dataset = face_data.identity_dataset(
        root, options["train_people"], options["eval_people"], tuple(config.image_size),
        options["channels"], options["images_per_person"], options["augment"])
    print(f"train people: {len(dataset.train.names)} ({dataset.num_train} images); held-out "
          f"people: {len(dataset.eval.names)} ({dataset.num_eval} images)", flush=True)
    _save_config(config, workdir)
    start = time.perf_counter()
    result = train.train_and_evaluate(config, workdir,
                                      lambda resolved: faces.triplet_task(resolved, dataset))
    seconds = time.perf_counter() - start
    print(f"trained {result.steps_run} steps in {seconds:.1f} s; held-out leave-one-out "
          f"nearest-neighbour accuracy {result.metrics['nn_accuracy']:.4f}", flush=True)


def load_embedder(workdir: str, config: ConfigDict):
    """A jit-compiled images -> embeddings function of the workdir's latest checkpoint."""
    if config.normalize:
        raise ValueError("faces runs feed [0, 1] images (config.normalize=False); this one "
                         "normalised with its training set's statistics, which are not saved")
    checkpointer = train.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        step = checkpointer.latest_step()
        state = checkpointer.restore_arrays()
    finally:
        checkpointer.close()
    model = faces.encoder_from_config(train.resolve_platform(config))
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    apply = jax.jit(lambda images: model.apply(variables, images, train=False))

    def embed(images: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([np.asarray(apply(images[i : i + batch]))
                               for i in range(0, len(images), batch)])

    return embed, step


def _pairs_from_file(path: str, data: face_data.IdentityImages):
    listed, num_folds = faces.read_pairs_file(path)
    pairs = np.array([(data.image_number(a, i), data.image_number(b, j))
                      for a, i, b, j in listed])
    same = np.array([a == b for a, _, b, _ in listed])
    folds = np.arange(len(pairs)) * num_folds // len(pairs)
    return pairs, same, folds, num_folds


def method_report(embeddings: np.ndarray, data: face_data.IdentityImages, seed: int,
                  pairs_file: str | None) -> dict:
    """Verification, one-shot and open-set figures of one embedding of `data`."""
    if pairs_file:
        pairs, same, folds, num_folds = _pairs_from_file(pairs_file, data)
        verification = faces.verification_report(embeddings, data.labels, seed, num_folds,
                                                 pairs, same, folds)
    else:
        verification = faces.verification_report(embeddings, data.labels, seed)
    report = {"verification": verification,
              "one_shot": faces.one_shot_accuracy(embeddings, data.labels, seed=seed)}
    if len(data.names) >= 10:
        report["open_set"] = faces.open_set_rejection(embeddings, data.labels, seed=seed)
    report["threshold"] = verification["threshold"]
    return report


def _plot_roc(reports: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, report in reports.items():
        roc = report["verification"]["roc"]
        ax.plot(roc["far"], roc["val"], label=f"{name} "
                f"({100 * report['verification']['accuracy_mean']:.1f} %)")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("validation rate (VAL)")
    ax.set_title("Verification ROC, held-out people")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_line(name: str, report: dict) -> str:
    v = report["verification"]
    vals = "  ".join(f"VAL@FAR={far} {100 * f['val']:.1f} % (FAR {f['far']:.4f}, "
                     f"{f['num_negatives']} negatives)" for far, f in v["val_at_far"].items())
    line = (f"{name:<10} verification {100 * v['accuracy_mean']:.1f} +- "
            f"{100 * v['accuracy_std']:.1f} %  {vals}\n{'':<10} one-shot "
            f"{100 * report['one_shot']['accuracy_mean']:.1f} +- "
            f"{100 * report['one_shot']['accuracy_std']:.1f} %")
    if "open_set" in report:
        o = report["open_set"]
        line += (f"  open-set rejection {100 * o['rejection_mean']:.1f} +- "
                 f"{100 * o['rejection_std']:.1f} % at {100 * o['acceptance']:.0f} % acceptance "
                 f"({o['draws']} draws)")
    return line


def run_evaluate(workdir: str) -> dict:
    config = _load_config(workdir)
    options = faces.task_config(config)
    root = _data_root(config)
    people_spec = _PEOPLE.value or options["eval_people"]
    available = face_data.list_people(root)
    trained = set(face_data.parse_people(options["train_people"], available)) if (
        options["train_people"]) else set()
    people = face_data.parse_people(people_spec, available) if people_spec else [
        p for p in available if p not in trained]
    seen = sorted(set(people) & trained)
    if seen:
        raise ValueError(f"--people: {seen} were used in training; evaluate on other people")
    data = face_data.read_identity_folder(root, tuple(config.image_size), options["channels"],
                                          people)
    embed, step = load_embedder(workdir, config)
    start = time.perf_counter()
    embeddings = embed(data.images)
    embed_seconds = time.perf_counter() - start
    raw = data.images.reshape(len(data.images), -1)
    reports = {"model": method_report(embeddings, data, _SEED.value, _PAIRS.value),
               "raw pixels": method_report(raw, data, _SEED.value, _PAIRS.value)}
    roc_path = os.path.join(workdir, "roc.png")
    _plot_roc(reports, roc_path)
    print(f"checkpoint step {step}; {len(people)} held-out people, {len(data.images)} images, "
          f"{reports['model']['verification']['num_pairs']} pairs; embedded in "
          f"{embed_seconds:.2f} s")
    for name, report in reports.items():
        print(_summary_line(name, report))
    print(f"ROC curve: {roc_path}")
    saved = {name: {**report, "verification": {
        k: v for k, v in report["verification"].items() if k != "roc"}}
        for name, report in reports.items()}
    saved.update(step=step, people=people, seed=_SEED.value, pairs_file=_PAIRS.value)
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
        json.dump(saved, f, indent=2)
    return saved


def run_recognize(workdir: str) -> None:
    if not (_DATABASE.value and _IMAGE.value):
        raise app.UsageError("recognize needs --database=DIR and --image=PATH")
    config = _load_config(workdir)
    options = faces.task_config(config)
    threshold = _THRESHOLD.value
    if threshold is None:
        path = os.path.join(workdir, REPORT_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no --threshold and no {path}: run `evaluate` first")
        with open(path) as f:
            threshold = json.load(f)["model"]["threshold"]
    size, channels = tuple(config.image_size), options["channels"]
    gallery = face_data.read_identity_folder(_DATABASE.value, size, channels, min_images=1)
    first = np.array([np.flatnonzero(gallery.labels == i)[0] for i in range(len(gallery.names))])
    query = face_data.read_image(_IMAGE.value, size, channels)
    embed, _ = load_embedder(workdir, config)
    database = faces.enroll(embed(gallery.images[first]), gallery.names)
    name, distance = faces.recognize(embed(query[None])[0], database, threshold)
    print(f"{name}  (distance {distance:.4f}, threshold {threshold:.4f})")


def main(argv):
    common.quiet_logging()
    if len(argv) != 2 or argv[1] not in ("train", "evaluate", "recognize"):
        raise app.UsageError("usage: python -m experiments.faces train|evaluate|recognize "
                             "--workdir=DIR [...]")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if argv[1] == "train":
        common.maybe_initialize_distributed()
        run_train(_CONFIG.value, _WORKDIR.value)
    elif argv[1] == "evaluate":
        run_evaluate(_WORKDIR.value)
    else:
        run_recognize(_WORKDIR.value)


if __name__ == "__main__":
    common.run(main)
