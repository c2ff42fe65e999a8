"""Pytest fixtures for Milvus: a real Milvus 2.3.5 server and Milvus Lite database files.

``milvus_server`` (session-scoped) is the server named by ``CLIP_INGEST_TEST_MILVUS_URI`` when
set (CI starts one with ``.ci/milvus-server.sh`` and also exports its data folder as
``CLIP_INGEST_MILVUS_SERVER_DIR``, which makes it stoppable), otherwise one started here through
the same script in a temporary folder and killed at the end of the session. Outage tests call
``milvus_server.stop()`` / ``.start()``; the server may come back on another port, so always
read ``milvus_server.uri`` after ``start()``.

Registered once, in ``tests/conftest.py`` (``pytest_plugins = ["milvus_server"]``): test modules
request the fixtures by name and must not import them (an import would be a second definition,
with a second server). :func:`milvus_uri` picks the server or a Lite file for parametrized tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "milvus-server.sh"
URI_ENV = "CLIP_INGEST_TEST_MILVUS_URI"
DIR_ENV = "CLIP_INGEST_MILVUS_SERVER_DIR"
#: seconds one start may take (first start unpacks ~250 MB of binaries)
START_TIMEOUT = 180


class MilvusServer:
    """A Milvus server for tests: ``uri``, and ``stop()`` / ``start()`` when its data folder is known."""

    def __init__(self, uri: str | None, data_dir: Path | None) -> None:
        self.uri = uri or ""
        self.data_dir = data_dir

    @property
    def controllable(self) -> bool:
        """Whether ``stop()`` / ``start()`` work (a server whose data folder this session knows)."""
        return self.data_dir is not None

    def _script(self, action: str) -> str:
        if self.data_dir is None:
            raise RuntimeError(f"this Milvus server ({self.uri}) was started elsewhere; set {DIR_ENV} to control it")
        env = dict(os.environ, MILVUS_START_TIMEOUT=str(START_TIMEOUT))
        bundled = Path(sys.executable).parent / "milvus-server"  # the test venv's, if it has one
        if "MILVUS_SERVER_BIN" not in env and bundled.exists():
            env["MILVUS_SERVER_BIN"] = str(bundled)
        done = subprocess.run(
            ["bash", str(SCRIPT), action, str(self.data_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"milvus-server.sh {action} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout.strip()

    def start(self) -> None:
        """Start the server (or find it healthy) and wait for health; updates ``uri``."""
        self.uri = self._script("start").splitlines()[-1]
        if os.environ.get(URI_ENV):  # code that reads the environment (benchmarks) follows a moved port
            os.environ[URI_ENV] = self.uri

    def stop(self) -> None:
        """Kill the server's whole process group and wait until it is gone."""
        self._script("stop")


def _server_available() -> bool:
    return shutil.which("milvus-server") is not None or (Path(sys.executable).parent / "milvus-server").exists()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """The session's Milvus server (given by the environment, or started and finally killed here)."""
    given = os.environ.get(URI_ENV)
    if given:
        data_dir = os.environ.get(DIR_ENV)
        yield MilvusServer(given, Path(data_dir) if data_dir else None)
        return
    if not _server_available():
        pytest.skip(f"no Milvus server: set {URI_ENV} or pip install milvus==2.3.5")
    server = MilvusServer(None, tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def milvus_lite_uri(tmp_path: Path) -> str:
    """A fresh Milvus Lite database file path for one test."""
    return str(tmp_path / "milvus.db")


def milvus_uri(request: pytest.FixtureRequest, on_server: bool, lite_file: Path) -> str:
    """The session server's URI when ``on_server`` (requested only then), else the Milvus Lite file ``lite_file``.

    For tests parametrized over deployments: the server is started only by the cases that use it.
    """
    return request.getfixturevalue("milvus_server").uri if on_server else str(lite_file)


__all__ = ["MilvusServer", "milvus_lite_uri", "milvus_server", "milvus_uri"]
