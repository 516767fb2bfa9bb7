"""What `pip install p2psc` gives a user: one top-level package, complete metadata, a working CLI.

The slow test builds the wheel from a copy of the sources (so no stale ``build/`` of the checkout
can leak into it), installs it, not editable, into a fresh virtual environment, and runs
``p2psc explore`` from a folder where the checkout is not importable.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import p2psc

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = {"speed", "trio", "redis", "metrics", "test", "docs"}


def _package_folders() -> set[str]:
    """Every package of the source tree, named as it installs (models/ is p2psc.models)."""
    names = set()
    for top, installed in (("p2psc", "p2psc"), ("models", "p2psc.models")):
        for init in (ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / top).parts
            names.add(".".join((installed, *relative)))
    return names


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """packages.find cannot see a mapped package, so the list is explicit: a new subpackage
    that is not listed would be missing from the wheel."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _package_folders()
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"p2psc.models": "models"}


def test_metadata_declares_every_extra_and_takes_the_version_from_one_place() -> None:
    project = PYPROJECT["project"]
    assert set(project["optional-dependencies"]) == EXTRAS
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "p2psc.__version__"}
    assert (ROOT / "LICENSE").is_file() and project["license-files"] == ["LICENSE"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{p2psc.__version__}]" in changelog or "## [Unreleased]" in changelog


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_has_only_p2psc_and_runs_the_explorer_installed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("p2psc", "models"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, source], tmp_path)
    (wheel,) = wheels.glob("p2psc-*.whl")
    assert wheel.name.startswith(f"p2psc-{p2psc.__version__}-py3-none-any")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"p2psc-{p2psc.__version__}.dist-info"
        assert {name.split("/", 1)[0] for name in names} == {"p2psc", dist_info}
        assert "p2psc/models/explorer.py" in names and "p2psc/py.typed" in names
        top_level = f"{dist_info}/top_level.txt"
        if top_level in names:
            assert archive.read(top_level).decode().split() == ["p2psc"]
        assert f"{dist_info}/licenses/LICENSE" in names
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
    assert metadata["Version"] == p2psc.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "MIT"
    assert set(metadata.get_all("Provides-Extra") or []) == EXTRAS

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", wheel], tmp_path)
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the copy is on sys.path here
    elsewhere.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import importlib.util, p2psc.models.explorer as e; "
            "print(e.__file__); print(importlib.util.find_spec('models'))",
        ],
        elsewhere,
    ).split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "None"
    out = _run(
        [venv / "bin" / "p2psc", "explore", "negotiator", "--protocols", "1", "--quiet"],
        elsewhere,
    )
    assert ": OK" in out.splitlines()[0] and "states" in out, out
    assert _run([venv / "bin" / "p2psc", "--version"], elsewhere).strip() == (
        f"p2psc {p2psc.__version__}"
    )
