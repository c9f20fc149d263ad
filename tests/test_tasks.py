"""The task registry: layering of the library, the one platform decision, old runs mapping to
their tasks, array eval sums, and the segmentation worked example trained end to end."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys

import ml_collections
import numpy as np
import pytest

from jaxcnn import tasks, train
from jaxcnn.data import detection as detection_data
from jaxcnn.tasks import detector, segmentation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(ROOT, "jaxcnn")


# --- the import graph -------------------------------------------------------------------


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def _library_modules() -> dict[str, str]:
    """jaxcnn module name -> file path, for every .py under jaxcnn/."""
    found = {}
    for folder, _, files in os.walk(LIBRARY):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[_module_name(path)] = path
    return found


def _imports(path: str, module: str, known: set[str]) -> set[str]:
    """The jaxcnn modules `module` imports anywhere in its file (function-local included)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports pkg.module
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in known else base)
    return {name for name in out if name in known}


def _graph() -> dict[str, set[str]]:
    modules = _library_modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _component(module: str) -> str:
    """jaxcnn.train.loop -> train; jaxcnn.style -> style; jaxcnn -> jaxcnn."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_trainer_imports_no_task_model_loss_or_dataset():
    graph = _graph()
    forbidden = {"tasks", "models", "losses", "detection", "faces", "style", "weights",
                 "inspection", "convert"}
    bad = sorted((module, target) for module, targets in graph.items()
                 if _component(module) == "train" for target in targets
                 if _component(target) in forbidden
                 # The Dataset protocol (batches, masks, normaliser) is what the trainer
                 # consumes; no dataset module.
                 or (_component(target) == "data" and target != "jaxcnn.data.base"))
    assert bad == []
    assert graph["jaxcnn.train.task"] >= {"jaxcnn.data.base"}  # the walk sees imports at all


def test_task_packages_do_not_import_each_other_and_tasks_sit_on_top():
    graph = _graph()
    siblings = {"detection", "faces", "style", "inspection"}
    sideways = sorted((module, target) for module, targets in graph.items()
                      for target in targets
                      if _component(module) in siblings and _component(target) in siblings
                      and _component(target) != _component(module))
    assert sideways == []
    # Only the registry and the package root reach the tasks; one task module never imports
    # another (the registry imports them by name, lazily).
    upward = sorted((module, target) for module, targets in graph.items() for target in targets
                    if _component(target) == "tasks" and _component(module) != "tasks")
    assert upward == []
    between = sorted((module, target) for module, targets in graph.items() for target in targets
                     if module.startswith("jaxcnn.tasks.") and target.startswith("jaxcnn.tasks"))
    assert between == []
    # Pretrained weights are loaded in one module: nothing else reads .pth / .h5 files.
    loaders = sorted(module for module, targets in graph.items()
                     if "jaxcnn.convert" in targets and module != "jaxcnn.weights")
    assert loaders == []


def test_no_import_circle_and_no_module_named_after_the_standard_library():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph[node]):
            if target.startswith(node + "."):
                continue  # a package's __init__ importing its own submodules
            if state.get(target) == 1 and not node.startswith(target + "."):
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    shadowing = sorted(module for module in graph
                       if module.rsplit(".", 1)[-1] in sys.stdlib_module_names)
    assert shadowing == []


def _calls_to_choose(path: str) -> list[str]:
    """Qualified names of the functions in `path` that call kernels.choose (or choose)."""
    tree = ast.parse(open(path).read())
    found = []

    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call):
                func = child.func
                if ((isinstance(func, ast.Attribute) and func.attr == "choose"
                     and isinstance(func.value, ast.Name) and func.value.id == "kernels")
                        or (isinstance(func, ast.Name) and func.id == "choose")):
                    found.append(".".join(scope) or "<module>")
            walk(child, scope)

    walk(tree, [])
    return found


def test_the_platform_kernel_choice_is_made_in_one_function():
    calls = []
    for top in ("jaxcnn", "experiments", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    calls += [(os.path.relpath(path, ROOT), fn) for fn in _calls_to_choose(path)]
    assert calls == [(os.path.join("jaxcnn", "train", "program.py"), "platform_conv_impl")]


# --- selection, old runs, help ------------------------------------------------------------


def _previous_main_config(tmp_path, name: str, saved: dict) -> ml_collections.ConfigDict:
    """config.json as the previous main wrote it (no task.name), read back as evaluate does."""
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(saved))
    return train.load_run_config(str(workdir))


def test_runs_written_before_the_registry_map_to_their_tasks(tmp_path):
    demo = _previous_main_config(tmp_path, "demo", {"model": "lenet5",
                                                    "dataset": "embedded_mnist", "task": {}})
    faces = _previous_main_config(tmp_path, "faces", {
        "model": "lenet5", "dataset": "faces:../shared/data/att_faces",
        "task": {"embedding_dim": 64, "margin": 0.2, "mining": "semi_hard"}})
    old_detector = {key: list(value) if isinstance(value, tuple) else value
                    for key, value in detector.DEFAULTS.items()}
    old_detector["anchors"] = [[0.2, 0.1], [0.4, 0.3], [0.1, 0.3]]
    found = _previous_main_config(tmp_path, "detector", {
        "model": "yolo", "dataset": "synthetic_scenes", "task": old_detector})
    assert [tasks.infer_name(c) for c in (demo, faces, found)] == [
        "classification", "faces", "detector"]
    # The old detector's task keys are exactly today's (the run's fingerprint hashes them).
    assert set(found.task) == set(detector.DEFAULTS)
    np.testing.assert_array_equal(train.task_settings(found, detector.DEFAULTS).anchors,
                                  old_detector["anchors"])
    named = train.default_config()
    named.task = ml_collections.ConfigDict({"name": "segmentation"})
    named.model = "yolo"  # an explicit name wins over the old inference
    assert tasks.infer_name(named) == "segmentation"
    named.task.name = "segmentaton"
    with pytest.raises(train.UsageError, match="'segmentaton': expected one of classification"):
        tasks.build(named)


def test_key_help_names_every_key_the_selected_task_declares():
    config = train.default_config()
    config.task = ml_collections.ConfigDict({"name": "detector"})
    helped = tasks.key_help(config)
    assert set(helped) == {"task.name"} | {f"task.{key}" for key in detector.DEFAULTS}
    assert all(text and "\n" not in text for text in helped.values())
    for name in ("classification", "localization", "crop_classifier", "segmentation"):
        assert set(tasks.get(name).HELP) == set(tasks.get(name).DEFAULTS)


# --- array eval sums -----------------------------------------------------------------------


def test_array_eval_sums_need_a_metrics_function():
    totals = {"confusion": np.array([[3.0, 1.0], [0.0, 4.0]]), "loss": np.float64(4.0),
              "count": np.float64(2.0)}
    task = train.Task(model=None, dataset=None, loss_fn=None, eval_fn=lambda o, b: {})
    with pytest.raises(ValueError, match=r"\['confusion'\] are arrays"):
        train.metrics_from_sums(task, totals)
    task = dataclasses.replace(task, eval_metrics=segmentation.mean_iou)
    metrics = train.metrics_from_sums(task, totals)
    # IoU: class 0: 3 / (3 + 1 + 0), class 1: 4 / (4 + 0 + 1); pixels right: 7 of 8.
    assert metrics == pytest.approx({"loss": 2.0, "count": 2.0, "mean_iou": (0.75 + 0.8) / 2,
                                     "pixel_accuracy": 7 / 8})


# --- the segmentation example ----------------------------------------------------------------


def test_scene_labels_cover_exactly_the_drawn_object():
    image, boxes, classes = detection_data.synthetic_scene(4, 1, single_object=True,
                                                           background_fraction=0.0)
    labels = detection_data.scene_labels(boxes[None], classes[None], image.shape[0])[0]
    inside = labels == classes[0] + 1
    assert set(np.unique(labels)) == {0, int(classes[0]) + 1}
    # One flat colour plus the generator's N(0, 0.02) noise inside, the texture outside.
    assert image[inside].std(0).max() < 0.03
    ring = np.zeros_like(inside)
    ys, xs = np.nonzero(inside)
    ring[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
    assert np.abs(image[ring & ~inside].mean(0) - image[inside].mean(0)).max() > 0.1


@pytest.mark.parametrize("steps", [  # the pixel count needs few steps, the learning 120
    8, pytest.param(120, marks=pytest.mark.slow)])
def test_segmentation_trains_and_its_confusion_matrix_is_a_pixel_count(tmp_path, steps):
    config = train.default_config()
    config.update({"model": "segmentation", "dataset": "synthetic_scenes",
                   "image_size": (48, 48), "batch_size": 16, "eval_batch_size": 24,
                   "train_steps": steps, "learning_rate": 3e-3, "progress": False,
                   "tensorboard": False, "async_checkpoints": False})
    # A small trunk that compiles in seconds: 3x3 stem, 2x2 pool, two 5x5 convs of 32.
    config.task = ml_collections.ConfigDict({
        "name": "segmentation", "backbone": "filter_size_net",
        "backbone_kwargs": {"width": 32, "kernels": (5, 5)}, "num_train": 160, "num_test": 40})
    result = train.train_and_evaluate(config, str(tmp_path), tasks.build)
    run = tasks.load_run(str(tmp_path))
    # The same eval step, also handing out its per-pixel predictions and labels.
    gathering = dataclasses.replace(
        run.task, output_fn=lambda scores, batch: {"pred": scores.argmax(-1),
                                                   "pixels": batch["pixels"]},
        make_evaluator=lambda: train.GatherAll(lambda out: {}))
    program = train.build_program(run.config, gathering)
    confusion = train.eval_sums(program, run.state)["confusion"]
    outputs = train.collect_outputs(program, run.state)
    dataset = run.task.dataset
    np.testing.assert_array_equal(outputs["pixels"], detection_data.scene_labels(
        dataset.boxes_test, dataset.classes_test, 48))
    counted = np.zeros((4, 4))
    np.add.at(counted, (outputs["pixels"].ravel(), outputs["pred"].ravel()), 1)
    np.testing.assert_array_equal(confusion, counted)
    assert counted.sum() == 40 * 48 * 48
    # Chance: the best constant answer, "background" everywhere, has IoU = the background
    # share for class 0 and 0 for the three object classes.
    background_share = counted[0].sum() / counted.sum()
    assert result.metrics["mean_iou"] == pytest.approx(segmentation.mean_iou(
        {"confusion": counted})["mean_iou"])
    if steps == 120:
        assert result.metrics["mean_iou"] > background_share / 4 + 0.1  # 0.35 vs 0.19 here
