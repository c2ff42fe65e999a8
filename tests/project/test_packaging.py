"""Packaging: everything installs under the clip_ingest namespace, both as a wheel and editable."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = {"connectors": "clip_ingest.connectors", "model": "clip_ingest.model"}


def declared_packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_source_package_is_declared():
    found = set()
    for folder, namespace in SOURCE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([namespace, *rel.parts]))
    assert found <= set(declared_packages()), f"add to pyproject: {sorted(found - set(declared_packages()))}"


def _run(*cmd: str, cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment that sees the test environment's dependencies but not the project."""
    path = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", str(path), cwd=path)
    site = next((path / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # use the test environment's (newer) setuptools rather than the one venv bundles
    _run(str(path / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "setuptools", cwd=path)
    return path


def test_wheel_contains_only_the_namespace(tmp_path):
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT), cwd=tmp_path)
    wheel = next(tmp_path.glob("clip_ingest-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"clip_ingest", next(n.split("/")[0] for n in names if ".dist-info/" in n)}
    assert "clip_ingest/connectors/decode.py" in names
    assert "clip_ingest/connectors/model_configs/clip-ingest-tiny.json" in names
    assert "clip_ingest/model/__init__.py" in names


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_install_into_fresh_venv_and_import(venv, tmp_path, editable):
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    _run(*pip, *(["-e", str(ROOT)] if editable else [str(ROOT)]), cwd=tmp_path)
    code = (
        "import clip_ingest.connectors.decode as d, clip_ingest.model, importlib.util as u;"
        "assert u.find_spec('connectors') is None and u.find_spec('model') is None;"
        "print(d.__file__)"
    )
    out = _run(str(venv / "bin" / "python"), "-c", code, cwd=tmp_path)
    assert (str(ROOT) in out) is editable
    assert (venv / "bin" / "clip-ingest").exists()
    _run(str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "clip-ingest", cwd=tmp_path)


def test_no_unsafe_deserialisation_in_the_package():
    """No pickle loads, and every torch.load passes weights_only=True."""
    offenders = []
    for folder in SOURCE_ROOTS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for match in re.finditer(r"torch\.load\((?P<args>[^)]*)\)", text):
                if "weights_only=True" not in match.group("args"):
                    offenders.append(f"{path}: {match.group(0)}")
            if re.search(r"\bpickle\.loads?\(|\bimport pickle\b|\bdill\b|\bjoblib\.load\(", text):
                offenders.append(f"{path}: pickle")
    assert not offenders, offenders
