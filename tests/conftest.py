"""Shared test set-up: quiet TF, CPU only, and helpers for running experiments."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300,
               check: bool = True) -> subprocess.CompletedProcess:
    """python -m MODULE ARGS from the repository root, with extra environment."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


@pytest.fixture
def shared_data():
    """Path of ../shared/data; tests that need it skip with a message when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow (./launch.sh test --slow)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long checks, run only with --slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (./launch.sh test --slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
