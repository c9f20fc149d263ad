"""Detection annotations as people store them: VOC XML, YOLO txt, a YOLO data.yaml, COCO JSON.

Every reader returns an `AnnotatedSplit` (files, resized images, per-image relative
(cx, cy, h, w) boxes and int classes, class names, `Counts`) and applies one box policy:

- a coordinate outside the image by at most TOLERANCE (1e-3) of the side is clipped to
  the image and counted (labels written with 6 decimals reach 1.0000005);
- a box with no area (after clipping) or wholly outside the image is skipped and counted;
- a box reaching further outside, a non-finite number, a malformed line or an unreadable
  image makes the file a problem: skipped and listed (on_error="skip") or raised;
- an empty label file, and an image with no label file, is a background image and kept;
  label files without an image are orphans, listed;
- a class not among the declared names (config, data.yaml, classes.txt / *.names, COCO
  categories) is an AnnotationError naming the file, the class and the names; VOC XML
  without declared names takes the names it finds, but one that looks like a misspelling of
  another (difflib ratio >= 0.8) is an error that says how to declare the names;
- COCO crowd regions (iscrowd=1) are kept as class -2 - k (k: their class): no training
  target (every consumer treats classes < 0 as absent) and ignored by
  jaxcnn.detection.average_precision, as pycocotools does.

`Counts.line()` is the one summary line per split the loaders print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")
ON_ERROR = ("skip", "raise")
TOLERANCE = 1e-3  # of the image side: how far outside a coordinate may be and still be clipped
NAMES_FILES = ("classes.txt",)  # and any single *.names file


class AnnotationError(ValueError):
    """A bad box, an unknown class or an unreadable image, naming the file."""


def crowd_class(k: np.ndarray | int) -> np.ndarray | int:
    """The class id a crowd region of class k carries: -2 - k (-1 is padding)."""
    return -2 - k


@dataclasses.dataclass
class Counts:
    """What a reader kept, clipped, skipped and found missing in one split."""

    images: int = 0
    background: int = 0  # kept images with no object (empty or missing label file)
    unlabelled: int = 0  # of those, images with no label file at all
    boxes: int = 0  # boxes kept (crowd regions included)
    crowd: int = 0
    clipped: int = 0  # kept boxes with a coordinate clipped to the image
    no_area: int = 0  # skipped: zero or negative width or height after clipping
    outside: int = 0  # skipped: wholly outside the image
    orphans: list[str] = dataclasses.field(default_factory=list)  # labels without an image
    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # files skipped

    def line(self, where: str) -> str:
        """One summary line: '{where}: N images (...), M boxes (...); skipped ...'."""
        crowd = f", {self.crowd} crowd" if self.crowd else ""
        text = (f"{where}: {_n(self.images, 'image')} ({self.background} background, "
                f"{self.unlabelled} without a label file), {_n(self.boxes, 'box')} "
                f"({self.clipped} clipped to the image{crowd}); skipped "
                f"{_n(self.no_area, 'box')} with no area, {self.outside} outside the image, "
                f"{_n(len(self.problems), 'file')}")
        if self.problems:
            text += " (" + "; ".join(f"{f}: {r}" for f, r in self.problems[:2]) + (
                ", ..." if len(self.problems) > 2 else "") + ")"
        text += f"; {_n(len(self.orphans), 'label')} without an image"
        if self.orphans:
            text += " (" + ", ".join(self.orphans[:3]) + (", ..." if len(self.orphans) > 3
                                                         else "") + ")"
        return text


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("x") else "s")


@dataclasses.dataclass
class AnnotatedSplit:
    """One split as read: images (N, H, W, 3) float32 in [0, 1], per-image boxes (n_i, 4)
    relative (cx, cy, h, w) float32 and classes (n_i,) int32, the class names, the counts."""

    files: list[str]
    images: np.ndarray
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    names: tuple[str, ...]
    counts: Counts

    @property
    def problems(self) -> list[tuple[str, str]]:
        return self.counts.problems


# --- the box policy ---------------------------------------------------------------------


def clean_boxes(corners: np.ndarray, width: float, height: float, counts: Counts,
                tolerance: float = TOLERANCE) -> tuple[np.ndarray, str | None]:
    """(n, 4) corners (x1, y1, x2, y2) in units where the image is width x height ->
    (kept, reason): `kept` the boolean rows kept, `corners` clipped in place; reason names
    the first box that makes the file a problem (None: the file is fine). Counts clipped
    and skipped boxes."""
    corners = np.asarray(corners, np.float64).reshape(-1, 4)
    size = np.array([width, height, width, height], np.float64)
    for box in corners:
        if not np.all(np.isfinite(box)):
            return np.zeros(len(corners), bool), f"box {box.tolist()} is not finite"
    x1, y1, x2, y2 = corners.T
    no_area = (x2 <= x1) | (y2 <= y1)
    outside = ~no_area & ((x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height))
    slack = tolerance * size
    beyond = ~no_area & ~outside & ((corners < -slack) | (corners > size + slack)).any(1)
    if beyond.any():
        box = corners[np.argmax(beyond)]
        return np.zeros(len(corners), bool), (
            f"box {box.tolist()} (x1, y1, x2, y2) reaches outside the {width:g}x{height:g} "
            f"image by more than {tolerance:g} of its side")
    candidates = ~no_area & ~outside
    clipped_corners = np.clip(corners, 0, size)
    moved = candidates & (clipped_corners != corners).any(1)
    corners[:] = clipped_corners
    no_area |= candidates & ((corners[:, 2] <= corners[:, 0]) | (corners[:, 3] <= corners[:, 1]))
    kept = ~no_area & ~outside
    counts.no_area += int(no_area.sum())
    counts.outside += int(outside.sum())
    counts.clipped += int((moved & kept).sum())
    return kept, None


def corners_to_relative(corners: np.ndarray, width: float, height: float) -> np.ndarray:
    """(n, 4) (x1, y1, x2, y2) of a width x height image -> (n, 4) relative (cx, cy, h, w)."""
    x1, y1, x2, y2 = np.asarray(corners, np.float64).reshape(-1, 4).T
    return np.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (y2 - y1) / height,
                     (x2 - x1) / width], axis=1).astype(np.float32)


# --- files ------------------------------------------------------------------------------


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _problem(counts: Counts, file: str, reason: str, on_error: str) -> None:
    if on_error == "raise":
        raise AnnotationError(f"{file}: {reason}")
    counts.problems.append((file, reason))


def load_image(path: str, image_size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB float32 (H, W, 3) resized to image_size, and the original (height, width)."""
    from PIL import Image

    with Image.open(path) as image:
        original = (image.height, image.width)
        image.draft("RGB", (image_size[1], image_size[0]))  # JPEG: decode at a smaller scale
        image = image.convert("RGB").resize((image_size[1], image_size[0]), Image.BILINEAR)
        return np.asarray(image, np.float32) / 255.0, original


def _load_or_report(path: str, shown: str, image_size: tuple[int, int], counts: Counts,
                    on_error: str, where: str = ""):
    """load_image(path), or None after reporting it unreadable under `shown` (every reader)."""
    try:
        return load_image(path, image_size)
    except (OSError, ValueError) as error:
        _problem(counts, shown, f"unreadable image{where} ({error})", on_error)
        return None


def image_files(folder: str) -> list[str]:
    """Image paths under `folder` (recursively), sorted."""
    found = []
    for top, _, files in os.walk(folder):
        found += [os.path.join(top, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def read_names(path: str) -> tuple[str, ...]:
    """Class names from a classes.txt / *.names file: one per line, blank lines ignored."""
    with open(path) as handle:
        names = tuple(line.strip() for line in handle if line.strip())
    if not names:
        raise AnnotationError(f"{path}: declares no class names (expected one name a line)")
    return names


def names_file(*folders: str) -> str | None:
    """The classes.txt or the single *.names file in the first folder that has one."""
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in NAMES_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        found = sorted(f for f in os.listdir(folder) if f.endswith(".names"))
        if len(found) > 1:
            raise AnnotationError(f"{folder}: several *.names files {found}; keep one")
        if found:
            return os.path.join(folder, found[0])
    return None


def declared_names(given: Sequence[str] | None, where: str | None,
                   file_names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The names given (config) and those a file declares must agree; either alone counts."""
    given = tuple(given) if given else None
    if given and file_names and given != file_names:
        raise AnnotationError(f"class names {list(given)} disagree with {where}'s "
                              f"{list(file_names)}; give one or make them equal")
    return given or file_names


def _how_to_declare(root: str) -> str:
    return (f"declare the class names in {os.path.join(root, 'classes.txt')} (one a line) or "
            "config.task.class_names")


def _result(where: str, kept: list, names: tuple[str, ...], counts: Counts
            ) -> AnnotatedSplit:
    """The split from kept (file, image, boxes, classes); nothing kept is an error."""
    if not kept:
        raise AnnotationError(f"no usable annotated image in {where!r}; problems: "
                              f"{counts.problems[:3]}")
    counts.images = len(kept)
    counts.background = sum(len(c) == 0 for *_, c in kept)
    counts.boxes = sum(len(c) for *_, c in kept)
    counts.crowd = sum(int((np.asarray(c) <= -2).sum()) for *_, c in kept)
    return AnnotatedSplit(
        [file for file, *_ in kept], np.stack([image for _, image, *_ in kept]),
        [np.asarray(b, np.float32).reshape(-1, 4) for *_, b, _ in kept],
        [np.asarray(c, np.int32).reshape(-1) for *_, c in kept], names, counts)


# --- VOC XML ----------------------------------------------------------------------------


def _parse_voc_xml(path: str) -> tuple[str | None, tuple[int, int] | None, list]:
    """(filename, (height, width) or None, [(name, xmin, ymin, xmax, ymax, difficult)])."""
    root = ET.parse(path).getroot()
    filename = root.findtext("filename")
    size = root.find("size")
    shape = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        shape = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.findtext("name", "").strip(), *coords,
                        obj.findtext("difficult", "0").strip() == "1"))
    return filename, shape, objects


def _voc_names(parsed: list, root: str) -> tuple[str, ...]:
    """Names found in the XML files, sorted; a likely misspelling of another is an error."""
    uses: dict[str, tuple[int, str]] = {}
    for xml, _, _, objects in parsed:
        for name, *_ in objects:
            count, first = uses.get(name, (0, xml))
            uses[name] = (count + 1, first)
    names = sorted(uses)
    for name in sorted(names, key=lambda n: uses[n][0]):
        others = [n for n in names if n != name and uses[n][0] >= uses[name][0]]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.8)
        if close:
            raise AnnotationError(
                f"{uses[name][1]}: class {name!r} ({uses[name][0]} boxes) looks like a "
                f"misspelling of {close[0]!r} ({uses[close[0]][0]} boxes) and no class names "
                f"are declared; {_how_to_declare(root)}")
    return tuple(names)


def read_voc_folder(
    root: str, *, image_size: tuple[int, int] = (96, 96), class_names: Sequence[str] | None = None,
    on_error: str = "skip",
) -> AnnotatedSplit:
    """root/images + root/annotations/*.xml (Pascal VOC pixel corners) -> AnnotatedSplit.

    Names: class_names, else root/classes.txt or *.names, else the names found (a likely
    misspelling is an error). An image without an XML file is kept as background.
    """
    _check_on_error(on_error)
    image_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    for folder in (image_dir, ann_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"VOC folder {root!r} needs images/ and annotations/; "
                                    f"{folder!r} does not exist")
    counts = Counts()
    parsed = []
    for xml in sorted(f for f in os.listdir(ann_dir) if f.lower().endswith(".xml")):
        try:
            parsed.append((xml, *_parse_voc_xml(os.path.join(ann_dir, xml))))
        except (ET.ParseError, TypeError, ValueError, AttributeError) as error:
            _problem(counts, xml, f"unreadable annotation ({error})", on_error)
    file_path = names_file(root)
    names = declared_names(class_names, file_path, read_names(file_path) if file_path else None)
    if names is None:
        names = _voc_names(parsed, root)
    images = {f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_SUFFIXES)}
    by_stem = {os.path.splitext(f)[0]: f for f in sorted(images, reverse=True)}
    entries, used = [], set()
    for xml, filename, shape, objects in parsed:
        image_file = filename if filename in images else by_stem.get(os.path.splitext(xml)[0])
        if image_file is None:
            counts.orphans.append(xml)
            continue
        used.add(image_file)
        entries.append((xml, image_file, shape, objects))
    for image_file in sorted(images - used):  # no annotation: background
        entries.append((None, image_file, None, []))
    entries.sort(key=lambda e: e[1])
    kept = []
    for xml, image_file, shape, objects in entries:
        for name, *_ in objects:
            if name not in names:
                raise AnnotationError(f"{os.path.join(ann_dir, xml)}: unknown class {name!r}; "
                                      f"declared names: {', '.join(names)}")
        loaded = _load_or_report(os.path.join(image_dir, image_file), image_file, image_size,
                                 counts, on_error)
        if loaded is None:
            continue
        image, (height, width) = loaded
        if shape is not None and shape != (height, width):
            _problem(counts, xml, f"size {shape[1]}x{shape[0]} disagrees with the image "
                     f"{image_file} ({width}x{height})", on_error)
            continue
        corners = np.array([o[1:5] for o in objects], np.float64).reshape(-1, 4)
        keep, bad = clean_boxes(corners, width, height, counts)
        if bad:
            _problem(counts, xml, bad, on_error)
            continue
        classes = np.array([names.index(o[0]) for o in objects], np.int32)[keep]
        counts.unlabelled += xml is None
        kept.append((image_file, image, corners_to_relative(corners[keep], width, height),
                     classes))
    return _result(root, kept, names, counts)


# --- YOLO txt ---------------------------------------------------------------------------


def label_path(image_path: str) -> str:
    """The YOLO label file of an image: the last /images/ of its path -> /labels/, .txt."""
    head, sep, tail = image_path.rpartition(os.sep + "images" + os.sep)
    stem = os.path.splitext(tail if sep else image_path)[0]
    return (head + os.sep + "labels" + os.sep + stem if sep else stem) + ".txt"


def _parse_yolo_lines(text: str, num_names: int) -> tuple[np.ndarray, np.ndarray]:
    """Label text -> (n,) classes and (n, 4) relative corners; ValueError names the line.

    A line is `class cx cy w h`, or `class x1 y1 x2 y2 ...` (a polygon: its bounding box).
    """
    classes, corners = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls, values = float(fields[0]), [float(v) for v in fields[1:]]
            if cls != int(cls):
                raise ValueError
            cls = int(cls)  # some exporters write "3.0"
        except (ValueError, OverflowError):
            raise ValueError(f"line {number}: expected 'class cx cy w h', got {line!r}") from None
        if len(values) == 4:
            cx, cy, w, h = values
            corners.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            corners.append([min(xs), min(ys), max(xs), max(ys)])
        else:
            raise ValueError(f"line {number}: expected 'class cx cy w h' (or a polygon "
                             f"'class x1 y1 x2 y2 x3 y3 ...'), got {line!r}")
        if not 0 <= cls < num_names:
            raise KeyError(f"line {number}: unknown class {cls}; the {num_names} declared "
                           f"names take ids 0..{num_names - 1}")
        classes.append(cls)
    return np.array(classes, np.int32), np.array(corners, np.float64).reshape(-1, 4)


def read_yolo_images(
    images: Sequence[str], names: Sequence[str], *, where: str,
    image_size: tuple[int, int] = (96, 96), on_error: str = "skip",
) -> AnnotatedSplit:
    """YOLO images (paths) with their label files (`label_path`) -> AnnotatedSplit.

    Label files in the label folders these images use, with no image beside them, are
    listed as orphans; an image without a label file is kept as background.
    """
    _check_on_error(on_error)
    names = tuple(names)
    counts, kept = Counts(), []
    base = where if os.path.isdir(where) else os.path.dirname(where)
    folders: dict[str, set[str]] = {}  # label folder -> the image folders that use it
    for path in images:
        labels = label_path(path)
        if os.path.dirname(labels) != os.path.dirname(path):
            folders.setdefault(os.path.dirname(labels), set()).add(os.path.dirname(path))
        shown = os.path.relpath(labels, base)
        text = None
        if os.path.isfile(labels):
            with open(labels) as handle:
                text = handle.read()
        try:
            classes, corners = _parse_yolo_lines(text or "", len(names))
        except KeyError as error:
            raise AnnotationError(f"{labels}: {error.args[0]}; names: {', '.join(names)}") \
                from None
        except ValueError as error:
            _problem(counts, shown, str(error), on_error)
            continue
        keep, bad = clean_boxes(corners, 1.0, 1.0, counts)
        if bad:
            _problem(counts, shown, "relative " + bad, on_error)
            continue
        loaded = _load_or_report(path, os.path.relpath(path, base), image_size, counts, on_error)
        if loaded is None:
            continue
        image = loaded[0]
        counts.unlabelled += text is None
        kept.append((os.path.relpath(path, base), image,
                     corners_to_relative(corners[keep], 1.0, 1.0), classes[keep]))
    for label_dir, image_dirs in sorted(folders.items()):
        if not os.path.isdir(label_dir):
            continue
        stems = {os.path.splitext(f)[0] for d in image_dirs for f in os.listdir(d)
                 if f.lower().endswith(IMAGE_SUFFIXES)}
        counts.orphans += [os.path.relpath(os.path.join(label_dir, f), base)
                           for f in sorted(os.listdir(label_dir))
                           if f.endswith(".txt") and f not in NAMES_FILES
                           and os.path.splitext(f)[0] not in stems]
    return _result(where, kept, names, counts)


def yolo_names(root: str, class_names: Sequence[str] | None) -> tuple[str, ...]:
    """A YOLO folder's names: class_names and/or root/classes.txt, *.names (root or labels/)."""
    path = names_file(root, os.path.join(root, "labels"))
    names = declared_names(class_names, path, read_names(path) if path else None)
    if names is None:
        raise AnnotationError(f"YOLO folder {root!r}: labels hold class ids and no class names "
                              f"are declared; {_how_to_declare(root)}")
    return names


def read_yolo_folder(
    root: str, class_names: Sequence[str] | None = None, *,
    image_size: tuple[int, int] = (96, 96), on_error: str = "skip",
) -> AnnotatedSplit:
    """root/images + root/labels/*.txt (`class cx cy w h`, relative) -> AnnotatedSplit."""
    image_dir = os.path.join(root, "images")
    for folder in (image_dir, os.path.join(root, "labels")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"YOLO folder {root!r} needs images/ and labels/; "
                                    f"{folder!r} does not exist")
    names = yolo_names(root, class_names)
    return read_yolo_images(image_files(image_dir), names, where=root, image_size=image_size,
                            on_error=on_error)


# --- YOLO data.yaml ---------------------------------------------------------------------

YAML_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class YoloYaml:
    """A YOLO/ultralytics dataset YAML: the root, each split's image paths, the names."""

    path: str
    root: str
    splits: dict[str, list[str]]
    names: tuple[str, ...]


def _yaml_names(raw, path: str) -> tuple[str, ...]:
    if isinstance(raw, dict):
        keys = sorted(raw)
        if keys != list(range(len(keys))):
            raise AnnotationError(f"{path}: names as a dict must map ids 0..n-1 to names, got "
                                  f"ids {keys[:10]}")
        return tuple(str(raw[k]) for k in keys)
    if isinstance(raw, (list, tuple)) and raw:
        return tuple(str(n) for n in raw)
    raise AnnotationError(f"{path}: 'names' must be a list or a dict id -> name, got {raw!r}")


def _split_images(entry, root: str, path: str, split: str) -> list[str]:
    """A split entry (folder, .txt list of images, or a list of those) -> image paths."""
    found: list[str] = []
    for item in entry if isinstance(entry, (list, tuple)) else [entry]:
        where = os.path.normpath(os.path.join(root, str(item)))
        if os.path.isdir(where):
            found += image_files(where)
        elif os.path.isfile(where) and where.endswith(".txt"):
            base = os.path.dirname(where)
            with open(where) as handle:
                for line in handle:
                    line = line.strip()
                    if line:
                        image = os.path.join(root if not line.startswith("./") else base, line)
                        found.append(os.path.normpath(image))
        else:
            raise FileNotFoundError(f"{path}: {split}: {item!r} is neither a folder nor a .txt "
                                    f"list of images (looked for {where!r})")
    return found


def read_yolo_yaml(path: str) -> YoloYaml:
    """Parse a dataset YAML (`path`, `train`, `val`, optional `test`, `names` list or dict).

    `path` (the root) is taken relative to the YAML's folder; missing, the YAML's folder.
    """
    import yaml

    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise AnnotationError(f"{path}: unreadable dataset YAML ({error})") from None
    if not isinstance(data, dict) or "names" not in data or "train" not in data:
        raise AnnotationError(f"{path}: a dataset YAML needs 'train', 'val' and 'names' keys, "
                              f"got {sorted(data) if isinstance(data, dict) else data!r}")
    here = os.path.dirname(os.path.abspath(path))
    given = str(data.get("path") or ".")
    root = os.path.normpath(os.path.join(here, given))
    if not os.path.isdir(root) and os.path.isdir(given):  # ultralytics-style, from the cwd
        root = os.path.abspath(given)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{path}: path: {given!r} is not a folder (looked for {root!r} "
                                f"and {os.path.abspath(given)!r})")
    names = _yaml_names(data["names"], path)
    if "nc" in data and int(data["nc"]) != len(names):
        raise AnnotationError(f"{path}: nc={data['nc']} but {len(names)} names")
    splits = {s: _split_images(data[s], root, path, s) for s in YAML_SPLITS if data.get(s)}
    return YoloYaml(path, root, splits, names)


# --- COCO JSON --------------------------------------------------------------------------


def coco_image_dir(annotation_file: str) -> str:
    """COCO's usual image folder for annotations/instances_NAME.json: NAME/ or images/NAME/
    beside annotations/, else the JSON's own folder."""
    folder = os.path.dirname(os.path.abspath(annotation_file))
    stem = os.path.splitext(os.path.basename(annotation_file))[0]
    name = stem.split("_", 1)[1] if stem.startswith("instances_") else stem
    parent = os.path.dirname(folder)
    for candidate in (os.path.join(parent, name), os.path.join(parent, "images", name),
                      os.path.join(folder, name), os.path.join(parent, "images")):
        if os.path.isdir(candidate):
            return candidate
    return folder


def read_coco(
    annotation_file: str, image_dir: str | None = None, *, image_size: tuple[int, int] = (96, 96),
    class_names: Sequence[str] | None = None, on_error: str = "skip",
) -> AnnotatedSplit:
    """COCO instances JSON (through pycocotools.coco.COCO) + its images -> AnnotatedSplit.

    Category ids become classes 0..K-1 in sorted-id order; crowd boxes become class -2 - k;
    annotations whose image id is not listed are orphans.
    """
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ImportError("reading COCO JSON needs pycocotools (pip install pycocotools)") \
            from None
    _check_on_error(on_error)
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"COCO annotation file {annotation_file!r} does not exist")
    image_dir = image_dir or coco_image_dir(annotation_file)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "loading annotations" prints
            coco = COCO(annotation_file)
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as error:
        raise AnnotationError(f"{annotation_file}: not a COCO instances file ({error!r})") \
            from None
    cat_ids = sorted(coco.getCatIds())
    names = tuple(str(c["name"]) for c in coco.loadCats(cat_ids))
    declared_names(class_names, annotation_file, names)
    contiguous = {cat: k for k, cat in enumerate(cat_ids)}
    counts, kept = Counts(), []
    listed = set(coco.getImgIds())
    counts.orphans = [f"annotation {a['id']} (image {a['image_id']})"
                      for a in coco.dataset.get("annotations", []) if a["image_id"] not in listed]
    for image_id in sorted(listed):
        info = coco.loadImgs(image_id)[0]
        file = info["file_name"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        for ann in anns:
            if ann["category_id"] not in contiguous:
                raise AnnotationError(f"{annotation_file}: annotation {ann['id']} of {file} has "
                                      f"unknown category_id {ann['category_id']}; categories: "
                                      f"{cat_ids}")
        loaded = _load_or_report(os.path.join(image_dir, file), file, image_size, counts,
                                 on_error, where=f" in {image_dir}")
        if loaded is None:
            continue
        image, (height, width) = loaded
        if (info.get("height"), info.get("width")) not in ((height, width), (None, None)):
            _problem(counts, file, f"listed as {info.get('width')}x{info.get('height')}, the "
                     f"image is {width}x{height}", on_error)
            continue
        anns = sorted(anns, key=lambda a: bool(a.get("iscrowd", 0)))  # crowd after objects
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        keep, bad = clean_boxes(corners, width, height, counts)
        if bad:
            _problem(counts, file, bad, on_error)
            continue
        classes = np.array([contiguous[a["category_id"]] if not a.get("iscrowd", 0)
                            else crowd_class(contiguous[a["category_id"]]) for a in anns],
                           np.int32)
        kept.append((file, image, corners_to_relative(corners[keep], width, height),
                     classes[keep]))
    return _result(annotation_file, kept, names, counts)
