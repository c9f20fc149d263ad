"""The package itself: subpackages reachable from `import jaxcnn`, cheaply; one version."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys

import jaxcnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_jaxcnn_exposes_its_subpackages():
    assert jaxcnn.models.get_model("lenet5").num_classes == 10
    assert jaxcnn.kernels.choose("auto", "gpu") == "xla"
    assert jaxcnn.counting.conv_params(3, 3, 10) == 280
    for name in jaxcnn.SUBPACKAGES:
        assert getattr(jaxcnn, name).__name__ == f"jaxcnn.{name}"
        assert os.path.exists(os.path.join(ROOT, "jaxcnn", name)) or os.path.exists(
            os.path.join(ROOT, "jaxcnn", f"{name}.py"))


def test_import_jaxcnn_alone_imports_no_subpackage():
    code = "import sys, jaxcnn; print(sorted(m for m in sys.modules if m.startswith('jaxcnn')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout
    assert out.strip() == "['jaxcnn']"


def test_one_version_and_a_license():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    assert config["metadata"]["version"] == "attr: jaxcnn.__version__"
    assert config["metadata"]["license"] == "Apache-2.0"
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "Apache License" in f.read(200)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert "[project]" not in f.read()  # build-system only: metadata lives in setup.cfg


def _imported_modules(path: str) -> set[str]:
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_library_imports_no_study_and_models_no_platform_code():
    """jaxcnn never imports experiments/benchmarks; models, ops, counting, losses never
    import train/data/convert; kernels import nothing of jaxcnn but themselves."""
    below_models = ("jaxcnn.train", "jaxcnn.data", "jaxcnn.convert", "jaxcnn.tables")
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxcnn")):
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            relative = os.path.relpath(path, ROOT)
            imported = _imported_modules(path)
            assert not {m for m in imported if m.split(".")[0] in ("experiments", "benchmarks")}, \
                relative
            if relative.startswith(("jaxcnn/models", "jaxcnn/ops", "jaxcnn/counting",
                                    "jaxcnn/losses", "jaxcnn/kernels")):
                assert not [m for m in imported if m.startswith(below_models)], relative
            if relative.startswith("jaxcnn/kernels"):
                assert not [m for m in imported if m.startswith("jaxcnn.")
                            and not m.startswith("jaxcnn.kernels")], relative
            if relative.startswith("jaxcnn/models"):
                source = open(path).read()
                assert "default_backend" not in source and "cpuinfo" not in source, relative
