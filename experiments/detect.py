"""The YOLO-style detector's extras: predict on images, and YOLOv2's anchor-count study.

python -m experiments.detect predict  --workdir=DIR --images=DIR --output=DIR   # boxes drawn
python -m experiments.detect anchors  --data=...              # mean IoU for k = 1..9 (Fig. 2)
python -m experiments.detect report   --workdir=DIR   # DIR/detection_report.md from its metrics

Training and evaluation are the generic entry points (the detector task, jaxcnn.tasks.detector):
python -m experiments.train --config=experiments/configs/detect_synthetic.py --workdir=DIR
python -m experiments.evaluate --workdir=DIR    # AP@0.5, AP@[.5:.95] per class + the baseline
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image, ImageDraw, ImageFont, ImageOps

from experiments import common
from jaxcnn import tasks, train
from jaxcnn.data.detection_formats import IMAGE_SUFFIXES
from jaxcnn.detection import anchors as anchors_lib
from jaxcnn.detection import boxes as boxes_lib
from jaxcnn.detection.yolo import training_box_sizes
from jaxcnn.tasks import detector

COMMANDS = ("predict", "anchors", "report")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/detect_synthetic.py", "Config file[:overrides].")
_WORKDIR = flags.DEFINE_string("workdir", None, "predict: a detector run (experiments.train).")
_DATA = flags.DEFINE_string("data", None, "anchors: synthetic | voc:DIR | yolo:DIR | voc (TFDS).")
_IMAGES = flags.DEFINE_string("images", None, "predict: a folder of images.")
_OUTPUT = flags.DEFINE_string("output", None, "predict/anchors: where the PNGs go.")
_MAX_K = flags.DEFINE_integer("max_k", 9, "anchors: the largest number of clusters.")
_RESTARTS = flags.DEFINE_integer("restarts", 10, "anchors: seeded k-means starts per k (the "
                                 "best mean IoU is kept).")


def dataset_name(data: str) -> str:
    """--data spelling -> config.dataset."""
    if data == "synthetic":
        return "synthetic_scenes"
    for prefix, name in (("voc:", "voc_folder:"), ("yolo:", "yolo_folder:")):
        if data.startswith(prefix):
            return name + data[len(prefix):]
    return data


def _config():
    config = _CONFIG.value
    if _DATA.value:
        config.dataset = dataset_name(_DATA.value)
    return config


def _read_images(folder: str, side: int) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """The folder's images (sorted names), resized to side x side in [0, 1], and as read."""
    if not os.path.isdir(folder):
        raise ValueError(f"--images={folder!r} is not a folder")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"--images={folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    originals, resized = [], []
    for name in names:
        try:
            with Image.open(os.path.join(folder, name)) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")  # as a viewer shows it
        except OSError as error:
            raise ValueError(f"cannot read image {os.path.join(folder, name)}: {error}") from error
        originals.append(np.asarray(image))
        resized.append(np.asarray(image.resize((side, side), Image.BILINEAR), np.float32) / 255)
    return names, np.stack(resized), originals


COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0))


def _label(pen: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour, font,
           bounds: tuple[int, int]) -> None:
    """White text on a filled box of `colour` at xy (kept inside the image)."""
    left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 6)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(xy[0], 0), max(bounds[0] - width, 0))
    y = xy[1] - height if xy[1] - height >= 0 else xy[1]  # above the box, else inside it
    pen.rectangle([x, y, x + width, y + height], fill=colour)
    pen.text((x + pad - left, y + pad - top), text, fill=(255, 255, 255), font=font)


def draw(image: np.ndarray, found: dict[str, np.ndarray], names, min_score: float) -> Image.Image:
    """An RGB image with each detection's box and 'class score' label, sized to the image
    (font ~1/30 of the shorter side, at least 12 px); 'no detections' when none is drawn."""
    picture = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(picture)
    height, width = image.shape[:2]
    font = ImageFont.load_default(size=max(12, round(min(height, width) / 30)))
    line = max(2, round(min(height, width) / 240))
    corners = np.asarray(boxes_lib.to_pixels(found["det_boxes"], height, width))
    shown = 0
    for box, score, cls in zip(corners, found["det_scores"], found["det_classes"]):
        if cls < 0 or score < min_score:
            continue
        colour = COLOURS[int(cls) % len(COLOURS)]
        pen.rectangle([float(v) for v in box], outline=colour, width=line)
        _label(pen, (float(box[0]), float(box[1])), f"{names[int(cls)]} {score:.2f}", colour,
               font, (width, height))
        shown += 1
    if not shown:
        _label(pen, (0, height), f"no detections (score >= {min_score:.2f})", (90, 90, 90),
               font, (width, height))
    return picture


def predict_command() -> None:
    if not _IMAGES.value or not _OUTPUT.value:
        raise app.UsageError("predict needs --images=DIR and --output=DIR")
    run = tasks.load_run(_WORKDIR.value)
    spec = detector.spec(run.config, run.task.dataset)
    names, images, originals = _read_images(_IMAGES.value, run.task.dataset.image_shape[0])
    run_detect = jax.jit(lambda x: spec.detect(run.predict(x)))
    os.makedirs(_OUTPUT.value, exist_ok=True)
    for start in range(0, len(names), 32):
        found = jax.device_get(run_detect(jnp.asarray(images[start : start + 32])))
        for i, name in enumerate(names[start : start + 32]):
            one = {key: value[i] for key, value in found.items()}
            out = os.path.join(_OUTPUT.value, os.path.splitext(name)[0] + ".png")
            draw(originals[start + i], one, spec.class_names, min_score=0.3).save(out)
    print(f"checkpoint step {run.step}: drew detections (score >= 0.3) on {len(names)} images "
          f"into {_OUTPUT.value}", flush=True)


def dataset_title(spec: str) -> str:
    """A short name for a dataset spec: 'raccoon (voc_folder)' for voc_folder:../data/raccoon."""
    kind, _, path = spec.partition(":")
    if not path:
        return spec
    path = path.split(",")[0]
    if ".json:" in path:  # coco:ANN.json:IMAGES
        path = path.partition(".json:")[0] + ".json"
    for suffix in (":val", ":test"):  # yolo_yaml:DATA.yaml:SPLIT
        path = path.removesuffix(suffix)
    path = path.rstrip("/")
    base = os.path.basename(path)
    if base.endswith((".yaml", ".yml", ".json")):  # data.yaml / instances_x.json: its folder
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        base = f"{parent}/{base}" if parent else base
    return f"{base} ({kind})"


def anchors_command() -> None:
    config = _config()
    settings = train.task_settings(config, detector.DEFAULTS)
    dataset = detector.dataset_from_config(config, settings)
    sizes = training_box_sizes(dataset)
    rows = ["| k | mean IoU, mean update | mean IoU, median update | anchors (h, w), mean update |",
            "|---|---|---|---|"]
    curves: dict[str, list[float]] = {update: [] for update in anchors_lib.UPDATES}
    for k in range(1, min(_MAX_K.value, len(sizes)) + 1):
        found = {update: anchors_lib.kmeans_anchors(sizes, k, restarts=_RESTARTS.value,
                                                    update=update)
                 for update in anchors_lib.UPDATES}
        for update, (_, mean_iou) in found.items():
            curves[update].append(float(mean_iou))
        rows.append(f"| {k} | {curves['mean'][-1]:.3f} | {curves['median'][-1]:.3f} | " + ", ".join(
            f"({h:.2f}, {w:.2f})" for h, w in np.asarray(found["mean"][0])) + " |")
    title = dataset_title(config.dataset)
    print(f"{len(sizes)} training boxes of {config.dataset}, best of {_RESTARTS.value} seeded "
          "k-means starts per k\n" + "\n".join(rows), flush=True)
    if _OUTPUT.value:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(_OUTPUT.value, exist_ok=True)
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for update, marker in zip(anchors_lib.UPDATES, ("o-", "s--")):
            ax.plot(range(1, len(curves[update]) + 1), curves[update], marker,
                    label=f"{update} update")
        ax.set(xlabel="number of anchors k", ylabel="mean IoU with the nearest anchor",
               title=f"dimension clusters: {title}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(_OUTPUT.value, "anchors.png"), dpi=120)


def report_table(metrics: dict[str, float], names) -> str:
    """Markdown: AP@0.5, AP@[.5:.95] and the constant baseline's AP@0.5 per class and mean."""
    lines = ["| class | AP@0.5 | AP@[.5:.95] | baseline AP@0.5 |", "|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {metrics[f'AP50/{name}']:.3f} | "
                     f"{metrics[f'AP50_95/{name}']:.3f} | {metrics[f'baseline_AP50/{name}']:.3f} |")
    lines.append(f"| **mean** | **{metrics['mAP50']:.3f}** | **{metrics['mAP50_95']:.3f}** | "
                 f"{metrics['baseline_mAP50']:.3f} |")
    return "\n".join(lines)


def report_command() -> None:
    """DIR/detection_report.md from DIR/eval_metrics.json (else the run's final metrics)."""
    config = train.load_run_config(_WORKDIR.value)
    for name in ("eval_metrics.json", "final_metrics.json"):
        path = os.path.join(_WORKDIR.value, name)
        if os.path.isfile(path):
            break
    else:
        raise app.UsageError(f"{_WORKDIR.value} has no eval_metrics.json or final_metrics.json: "
                             f"train or evaluate it first")
    with open(path) as f:
        metrics = json.load(f)
    text = (f"Detector `{config.task.backbone}` trunk on `{config.dataset}`, checkpoint step "
            f"{metrics['step']} ({os.path.basename(path)}).\n\n"
            f"{report_table(metrics, config.task.class_names)}\n")
    print(text, flush=True)
    with open(os.path.join(_WORKDIR.value, "detection_report.md"), "w") as f:
        f.write(text)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: detect {{{'|'.join(COMMANDS)}}} [flags]; got {argv[1:]}")
    common.quiet_logging()
    command = argv[1]
    if command in ("predict", "report") and not _WORKDIR.value:
        raise app.UsageError(f"detect {command} needs --workdir")
    {"predict": predict_command, "anchors": anchors_command, "report": report_command}[command]()


if __name__ == "__main__":
    common.run(main)
