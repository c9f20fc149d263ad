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
