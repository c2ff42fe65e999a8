"""``clip-ingest --executor ray`` against a multi-process Ray cluster, reached by address the way
``ray job submit`` or a RayJob runs it (docs/deployment.md): a head started with ``ray start
--head`` and a worker node with ``ray start --address``, each its own raylet and object store.
The worker node is killed mid-run (SIGKILL to its whole process group, as a preempted node dies);
Ray Data re-runs its lost work on the head, and the collection must hold every image exactly once.

The cluster uses token authentication with a token of its own (Ray enables it when a token
exists in ``~/.ray``; explicit here, so the test does not depend on the home folder) and keeps
every process in the test's own process groups: nothing is left behind, and ``ray stop``, which
would end every Ray of this machine, is never called."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from clip_ingest.connectors.backends import open_store
from conftest import TINY_SPEC
from imagegen import write_shape_folder
from ingest_helpers import all_paths
from serve_helpers import free_port

pytestmark = pytest.mark.ray_cluster

BIN = Path(sys.executable).parent
IMAGES = 160
#: how long after the run reports its work list the worker node is killed
KILL_AFTER_S = 1.5


class LocalRayCluster:
    """A head and worker nodes, each a ``ray start --block`` process group of the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            # a dead node is noticed in about 3 s instead of 15 s
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
        }
        # Ray's socket paths must stay under 107 bytes: a short folder, not pytest's tmp_path
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.nodes: list[subprocess.Popen] = []

    def _launch(self, *args: str) -> tuple[subprocess.Popen, Path]:
        log_file = self.temp_dir / f"node-{len(self.nodes)}.log"
        with log_file.open("w") as log:
            proc = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                 "--num-cpus", "1", "--dashboard-agent-listen-port", str(free_port()), *args],
                env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )
        self.nodes.append(proc)
        return proc, log_file

    @staticmethod
    def _wait_started(proc: subprocess.Popen, log_file: Path, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log_file.read_text():  # --block prints it once the node runs
            assert proc.poll() is None and time.monotonic() < deadline, "the node did not start:\n" + log_file.read_text()[-3000:]
            time.sleep(0.2)

    def start(self) -> subprocess.Popen:
        """The head and one worker node, started side by side (the worker waits for the head's
        GCS); returns the worker node."""
        head = self._launch("--head", "--port", str(self.port), "--include-dashboard", "false",
                            "--dashboard-port", str(free_port()), "--temp-dir", str(self.temp_dir))
        worker = self._launch("--address", self.address)
        for proc, log_file in (head, worker):
            self._wait_started(proc, log_file)
        return worker[0]

    def kill(self, node: subprocess.Popen) -> None:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_cluster() -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_ingest_on_a_two_node_cluster_keeps_every_image_once_when_a_worker_node_dies(ray_cluster, tmp_path):
    folder = write_shape_folder(tmp_path / "photos", n=IMAGES, sidecars=False)
    worker = ray_cluster.nodes[-1]  # the worker node started beside the head
    summary_file, data = tmp_path / "summary.json", tmp_path / "data"
    driver = subprocess.Popen(
        [str(BIN / "clip-ingest"), str(folder), "--target", "qdrant-edge", "--data-dir", str(data), "--model", TINY_SPEC,
         "--batch-size", "4", "--executor", "ray", "--ray-address", ray_cluster.address, "--failed-files-ok",
         "--summary", str(summary_file)],
        env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log, killed_while_running = [], False
    try:
        for line in driver.stdout:
            log.append(line)
            if "files to read on" in line:
                assert "on 2 CPUs, 2 embed workers" in line, "the run does not see both nodes: " + line
                time.sleep(KILL_AFTER_S)
                killed_while_running = driver.poll() is None
                ray_cluster.kill(worker)
        code = driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    output = "".join(log)
    assert code == 0, output[-4000:]
    assert killed_while_running, "the run ended before the worker node was killed: nothing was tested"
    summary = json.loads(summary_file.read_text())
    assert (summary["new"], summary["failed"], summary["outcome"]) == (IMAGES, 0, "ok"), summary
    with open_store("qdrant-edge", "images", path=str(data / "qdrant-edge")) as store:
        paths = all_paths(store)
    expected = sorted(str(p) for p in folder.rglob("*.png"))
    assert len(paths) == len(set(paths)), "an image is stored twice"
    assert paths == expected, "an image is missing"
