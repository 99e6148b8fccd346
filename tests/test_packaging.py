"""The installed distribution has one import name, ``detgym``: the wheel built from the checkout holds no other
top-level package (``agents`` and ``benchmarks`` are taken by other projects on PyPI), every subpackage folder is
listed in pyproject.toml, and the shipped tree tables travel with it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _package_folders() -> set[str]:
    """Every importable package under the folders that install as ``detgym`` and ``detgym.agents``."""
    found = set()
    for root, name in ((ROOT / "detgym", "detgym"), (ROOT / "agents", "detgym.agents")):
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found.add(".".join((name, *parts)))
    return found


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_folders()
    assert config["package-dir"] == {"detgym.agents": "agents"}


def _setuptools_builds_wheels() -> bool:
    """Whether the installed setuptools can build a wheel by itself (bdist_wheel is part of it from 70.1)."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # the installed setuptools builds the wheel when it can (no download); otherwise pip fetches one from the index
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", *isolation,
                           "-q", "-w", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("detgym-*.whl")
    return path


def test_wheel_installs_one_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"detgym"}
    assert "detgym/agents/registry.py" in names and "detgym/compare/api.py" in names
    assert not any(n.startswith(("agents/", "benchmarks/", "tests/")) for n in names)
    assert {"detgym/envs/loss_weight/trees/default-T3.json", "detgym/envs/loss_weight/trees/test-T2.json"} <= set(names)
