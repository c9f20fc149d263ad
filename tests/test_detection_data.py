"""Detection data as people store it: YOLO data.yaml, COCO JSON, the box policy, raccoons."""

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jaxcnn.data import detection as detection_data
from jaxcnn.data import detection_formats as formats

SIZE = (40, 20)  # width, height of every fixture image
# image -> YOLO label text (None: no label file). a: an edge box written with 6 decimals
# (x2 = 1.0000005), one reaching past top and bottom by 5e-7, one of zero width, one wholly
# outside; b: an empty label file; c: no label file.
TRAIN = {
    "a": "0 0.9000005 0.5 0.2 0.4\n1 0.25 0.5 0.5 1.000001\n1 0.5 0.5 0 0.2\n0 1.2 0.5 0.1 0.1\n",
    "b": "",
    "c": None,
}
VAL = {"d": "1 0.5 0.5 0.5 0.5\n"}


def _write_yolo(root):
    from PIL import Image

    for split, labels in (("train", TRAIN), ("val", VAL)):
        os.makedirs(root / "images" / split)
        os.makedirs(root / "labels" / split)
        for name, text in labels.items():
            Image.fromarray(np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)).save(
                root / "images" / split / f"{name}.png")
            if text is not None:
                (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return root / "data.yaml"


def _write_coco(root, split, labels, extra_annotations=()):
    """The same labels as a COCO instances file (pixel xywh; category ids 7 and 3)."""
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # sorted ids: cat, dog
    cat_id = {0: 3, 1: 7}
    images, anns = [], []
    for i, (name, text) in enumerate(sorted(labels.items())):
        images.append({"id": i + 1, "file_name": f"{name}.png", "width": SIZE[0],
                       "height": SIZE[1]})
        for line in (text or "").splitlines():
            cls, cx, cy, w, h = line.split()
            cx, cy, w, h = (float(v) for v in (cx, cy, w, h))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat_id[int(cls)],
                         "bbox": [(cx - w / 2) * SIZE[0], (cy - h / 2) * SIZE[1],
                                  w * SIZE[0], h * SIZE[1]], "area": w * h, "iscrowd": 0})
    anns += [{"id": len(anns) + 1 + k, **a} for k, a in enumerate(extra_annotations)]
    path = root / "annotations" / f"instances_{split}.json"
    os.makedirs(path.parent, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": categories}))
    return path


def test_yolo_yaml_keeps_every_valid_box_and_prints_the_counts(tmp_path, capsys):
    data_yaml = _write_yolo(tmp_path)
    dataset = detection_data.get_detection_dataset(f"yolo_yaml:{data_yaml}", image_size=(8, 8))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"yolo_yaml:{data_yaml} train: 3 images (2 background, 1 without a label file), 2 boxes "
        "(2 clipped to the image); skipped 1 box with no area, 1 outside the image, 0 files; "
        "1 label without an image (labels/train/orphan.txt)",
        f"yolo_yaml:{data_yaml} val: 1 image (0 background, 0 without a label file), 1 box "
        "(0 clipped to the image); skipped 0 boxes with no area, 0 outside the image, 0 files; "
        "0 labels without an image"]
    counts = dataset.counts["train"]
    assert (counts.images, counts.background, counts.unlabelled, counts.boxes, counts.clipped,
            counts.no_area, counts.outside, counts.orphans) == (
        3, 2, 1, 2, 2, 1, 1, ["labels/train/orphan.txt"])
    assert dataset.class_names == ("cat", "dog")
    assert (dataset.num_train, dataset.num_eval) == (3, 1)
    # Image a (first, sorted): the edge box clipped at x2 = 1, the tall box at y = 0 and 1.
    valid = dataset.classes_train[0] >= 0
    np.testing.assert_allclose(dataset.boxes_train[0][valid],
                               [[(0.8000005 + 1) / 2, 0.5, 0.4, 1 - 0.8000005],
                                [0.25, 0.5, 1.0, 0.5]], atol=1e-7)
    np.testing.assert_array_equal(dataset.classes_train[0][valid], [0, 1])
    assert (dataset.classes_train[1:] == -1).all()  # b and c: background images
    np.testing.assert_allclose(dataset.boxes_test[0, 0], [0.5, 0.5, 0.5, 0.5])


def test_the_same_annotations_as_coco_json_give_the_same_boxes(tmp_path, capsys):
    yolo = detection_data.load_yolo_yaml(str(_write_yolo(tmp_path)), image_size=(8, 8))
    train = _write_coco(tmp_path, "train", TRAIN, [{"image_id": 99, "category_id": 3,
                                                    "bbox": [1, 1, 2, 2], "iscrowd": 0}])
    val = _write_coco(tmp_path, "val", VAL, [{"image_id": 1, "category_id": 7, "iscrowd": 1,
                                              "bbox": [0, 0, 40, 10], "area": 400}])
    images = tmp_path / "images"
    coco = detection_data.get_detection_dataset(
        f"coco:{train}:{images / 'train'},{val}:{images / 'val'}", image_size=(8, 8))
    assert coco.class_names == ("cat", "dog")  # category ids 3, 7 in sorted order
    np.testing.assert_allclose(coco.boxes_train, yolo.boxes_train, atol=1e-6)
    np.testing.assert_array_equal(coco.classes_train, yolo.classes_train)
    np.testing.assert_allclose(coco.x_train, yolo.x_train)
    counts = coco.counts["train"]
    assert (counts.boxes, counts.clipped, counts.no_area, counts.outside, counts.background,
            counts.orphans) == (2, 2, 1, 1, 2, ["annotation 5 (image 99)"])
    # The crowd region of "dog" (class 1) is kept as class -2 - 1, after the object.
    np.testing.assert_array_equal(coco.classes_test[0], [1, -3])
    np.testing.assert_allclose(coco.boxes_test[0, 1], [0.5, 0.25, 0.5, 1.0])
    assert "1 crowd" in capsys.readouterr().out.splitlines()[-1]


def test_unknown_dataset_spec_lists_the_specs():
    with pytest.raises(ValueError, match=r"unknown detection dataset 'vocc:x'; expected one of "
                                         r"synthetic_scenes.*yolo_yaml:DATA\.yaml.*coco:"):
        detection_data.get_detection_dataset("vocc:x")


def test_yolo_folder_without_names_says_how_to_declare_them(tmp_path):
    _write_yolo(tmp_path)
    with pytest.raises(formats.AnnotationError, match=r"no class names are declared; declare "
                                                      r"the class names in .*classes\.txt"):
        detection_data.get_detection_dataset(f"yolo_folder:{tmp_path}")
    (tmp_path / "labels" / "animals.names").write_text("cat\ndog\n")
    dataset = detection_data.get_detection_dataset(f"yolo_folder:{tmp_path}", image_size=(8, 8),
                                                   report=None)
    assert dataset.class_names == ("cat", "dog")
    assert (dataset.num_train, dataset.num_eval) == (3, 1)  # images/train + images/val
    from jaxcnn import data  # data.get_dataset hands detection specs on
    assert data.get_dataset(f"yolo_folder:{tmp_path}", image_size=(8, 8)).num_eval == 1


def test_raccoon_converted_to_yolo_txt_loads_all_200_images(shared_data, tmp_path):
    """The raccoon VOC XML written as YOLO txt with 6 decimals, as converters do: edge boxes
    land at 1.0000005 and are clipped, not dropped."""
    source = os.path.join(shared_data, "raccoon")
    (tmp_path / "labels").mkdir()
    os.symlink(os.path.join(source, "images"), tmp_path / "images")
    (tmp_path / "classes.txt").write_text("raccoon\n")
    expected, beyond = {}, 0
    for xml in sorted(os.listdir(os.path.join(source, "annotations"))):
        root = ET.parse(os.path.join(source, "annotations", xml)).getroot()
        width, height = (float(root.find("size").findtext(k)) for k in ("width", "height"))
        lines, boxes = [], []
        for obj in root.findall("object"):
            x1, y1, x2, y2 = (float(obj.find("bndbox").findtext(k))
                              for k in ("xmin", "ymin", "xmax", "ymax"))
            values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                      (y2 - y1) / height]
            lines.append("0 " + " ".join(f"{v:.6f}" for v in values))
            cx, cy, w, h = (float(f"{v:.6f}") for v in values)
            edges = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            beyond += bool((edges < 0).any() or (edges > 1).any())
            boxes.append([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (y2 - y1) / height,
                          (x2 - x1) / width])
        stem = os.path.splitext(root.findtext("filename"))[0]
        (tmp_path / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        expected[stem] = boxes
    read = formats.read_yolo_folder(str(tmp_path), image_size=(8, 8))
    assert len(read.files) == 200 and not read.problems and not read.counts.orphans
    assert (read.counts.images, read.counts.boxes, read.counts.no_area) == (200, 217, 0)
    print(f"{beyond} raccoon boxes reach past the image after 6-decimal rounding")
    assert read.counts.clipped == beyond == 13  # 13 images the old reader dropped (issue 29)
    for file, boxes in zip(read.files, read.boxes):
        want = np.array(expected[os.path.splitext(os.path.basename(file))[0]])
        np.testing.assert_allclose(boxes, want, atol=2e-6)


def test_clean_boxes_policy_by_hand():
    counts = formats.Counts()
    corners = np.array([[-0.0005, 0.1, 0.5, 0.5],   # within 1e-3: clipped, kept
                        [0.2, 0.2, 0.2, 0.4],       # zero width: skipped
                        [1.1, 0.1, 1.3, 0.3],       # wholly outside: skipped
                        [0.5, 0.5, 1.0009, 0.9]])   # within 1e-3: clipped, kept
    kept, bad = formats.clean_boxes(corners, 1.0, 1.0, counts)
    assert bad is None and kept.tolist() == [True, False, False, True]
    np.testing.assert_allclose(corners[[0, 3]], [[0, 0.1, 0.5, 0.5], [0.5, 0.5, 1, 0.9]])
    assert (counts.clipped, counts.no_area, counts.outside) == (2, 1, 1)
    _, bad = formats.clean_boxes(np.array([[0.5, 0.5, 1.002, 0.9]]), 1.0, 1.0, counts)
    assert "reaches outside the 1x1 image by more than 0.001 of its side" in bad


DRAW_SCRIPT = """
import json, numpy as np
from experiments import detect
def label_rows(side_h, side_w, classes):
    image = np.full((side_h, side_w, 3), 200, np.uint8)
    found = {"det_boxes": np.array([[0.5, 0.6, 0.3, 0.3]]), "det_scores": np.array([0.91]),
             "det_classes": np.array(classes)}
    out = np.asarray(detect.draw(image, found, ["raccoon"], min_score=0.3))
    colour = detect.COLOURS[0] if classes[0] >= 0 else (90, 90, 90)
    rows = np.flatnonzero((out == colour).all(-1).any(1))
    top = round((0.6 - 0.15) * side_h)  # the box's top edge
    return int((rows < top).sum()) if classes[0] >= 0 else int(len(rows))
print(json.dumps({"big": label_rows(720, 960, [0]), "small": label_rows(96, 96, [0]),
                  "none": label_rows(720, 960, [-1]),
                  "titles": [detect.dataset_title(s) for s in (
                      "voc_folder:../shared/data/raccoon", "yolo_yaml:/d/coco8/data.yaml:val",
                      "coco:/d/annotations/instances_val2017.json:/d/val2017",
                      "synthetic_scenes")]}))
"""


def test_predictions_are_drawn_readably_and_no_detections_is_marked():
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-c", DRAW_SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Label boxes (rows above the box): font 1/30 of the shorter side, 24 px at 720x960, the
    # 12 px floor at 96x96. PIL's bitmap default, used before, was 11 px at any size.
    assert result["big"] >= 18 and result["big"] >= 1.7 * result["small"]
    assert result["none"] >= 18  # the grey 'no detections' label on an image with none
    assert result["titles"] == ["raccoon (voc_folder)", "coco8/data.yaml (yolo_yaml)",
                                "annotations/instances_val2017.json (coco)", "synthetic_scenes"]


def test_yolo_yaml_splits_as_txt_lists_and_lists_of_folders(tmp_path):
    _write_yolo(tmp_path)
    (tmp_path / "lists").mkdir()
    # "./" lines are relative to the list's folder (ultralytics), others to `path`.
    (tmp_path / "lists" / "train.txt").write_text("./../images/train/a.png\nimages/train/c.png\n")
    (tmp_path / "lists" / "data.yaml").write_text(
        "path: ..\ntrain: lists/train.txt\nval: [images/val]\nnames: [cat, dog]\n")
    dataset = detection_data.get_detection_dataset(
        f"yolo_yaml:{tmp_path / 'lists' / 'data.yaml'}", image_size=(8, 8), report=None)
    assert (dataset.num_train, dataset.num_eval) == (2, 1)
    assert (dataset.classes_train >= 0).sum(1).tolist() == [2, 0]  # a's two boxes; c: none
    assert dataset.counts["train"].unlabelled == 1 and dataset.class_names == ("cat", "dog")
