"""Database faults during a ``clip-ingest`` run: failing writes and a Milvus server that goes away.

Documented outcome (docs/guarantees.md): transient store errors are retried with exponential
backoff (6 attempts, tens of seconds at most); a run whose retries run out exits 1, and a re-run
completes. Either way nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from milvus_server import MilvusServer, milvus_server  # noqa: F401  (fixture)
from reliability_helpers import (
    PausePoint,
    StoreFaults,
    check_store,
    move_image,
    run_cli,
    run_forked,
    start_cli,
    wait_for_file,
    write_corpus,
    write_numbered,
)

EXIT_FATAL = 1


def qdrant_args(tmp_path: Path, root: Path) -> list[str]:
    return [str(root), "--data-dir", str(tmp_path / "data"), "--prune", "--batch-size", "8"]


def check_qdrant(tmp_path: Path, root: Path) -> None:
    run_forked(check_store, "qdrant", {"path": str(tmp_path / "data" / "qdrant")}, "images", root, None)


def change(root: Path, first_new: int, count: int) -> None:
    """Move ``count`` images to another folder and add ``count`` new ones (writes of both kinds)."""
    for path in sorted(root.rglob("*.png"))[:count]:
        move_image(path, int(path.parent.name[1:]) + 1)
    for index in range(first_new, first_new + count):
        write_numbered(root, index)


def test_flaky_writes_are_retried_and_repeated_writes_change_nothing(tmp_path):
    """The first write fails twice, then 30% of writes fail (half after being applied): runs complete exactly."""
    root = write_corpus(tmp_path / "photos", 60)
    first = run_cli(qdrant_args(tmp_path, root), tmp_path, hook=StoreFaults(seed=1, rate=0.3, outage=(1, 2)))
    assert first.exit_code == 0, first.output[-3000:]
    assert "retrying" in first.stderr
    change(root, 60, 8)
    second = run_cli(qdrant_args(tmp_path, root), tmp_path, hook=StoreFaults(seed=2, rate=0.3))
    assert second.exit_code == 0, second.output[-3000:]
    assert "applied, reply lost" in second.stderr
    check_qdrant(tmp_path, root)


def test_writes_failing_longer_than_the_retries_exit_1_and_a_rerun_completes(tmp_path):
    root = write_corpus(tmp_path / "photos", 60)
    assert run_cli(qdrant_args(tmp_path, root), tmp_path).exit_code == 0
    change(root, 60, 10)
    failed = run_cli(qdrant_args(tmp_path, root), tmp_path, hook=StoreFaults(seed=3, outage=(3, 100)))
    assert failed.exit_code == EXIT_FATAL, failed.output[-3000:]
    assert "injected outage" in failed.stderr and "Traceback" not in failed.stderr
    rerun = run_cli(qdrant_args(tmp_path, root), tmp_path)
    assert rerun.exit_code == 0, rerun.output[-3000:]
    check_qdrant(tmp_path, root)


@pytest.fixture
def stoppable_milvus(request, tmp_path_factory) -> MilvusServer:
    """The session's Milvus server if this session may stop it, else a private one (started here)."""
    shared = request.getfixturevalue("milvus_server")
    if shared.controllable:
        yield shared
        return
    own = MilvusServer(None, tmp_path_factory.mktemp("milvus-outage"))
    own.start()
    try:
        yield own
    finally:
        own.stop()


def milvus_outage(server: MilvusServer, tmp_path: Path, outage_s: float) -> None:
    """Ingest, change the corpus, stop the server in the middle of the next run, start it again."""
    root = write_corpus(tmp_path / "photos", 200)
    collection = f"outage_{uuid.uuid4().hex[:12]}"

    def args() -> list[str]:  # the server may come back on another port: read its URI each time
        return [str(root), "--target", "milvus", "--milvus-uri", server.uri, "--collection", collection,
                "--data-dir", str(tmp_path / "data"), "--prune", "--batch-size", "8"]

    assert run_cli(args(), tmp_path).exit_code == 0
    change(root, 200, 40)
    reached, resume = tmp_path / "reached", tmp_path / "resume"
    run = start_cli(args(), tmp_path, hook=PausePoint("decode", 1, str(reached), str(resume)))
    wait_for_file(reached, run)
    server.stop()
    resume.touch()  # the run goes on against a dead server
    time.sleep(outage_s)
    server.start()
    result = run.wait()
    assert result.exit_code in (0, EXIT_FATAL), result.output[-3000:]
    if result.exit_code == EXIT_FATAL:
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")  # pymilvus may log its own tracebacks
        rerun = run_cli(args(), tmp_path)
        assert rerun.exit_code == 0, rerun.output[-3000:]
    run_forked(check_store, "milvus", {"uri": server.uri}, collection, root, None)


@pytest.mark.milvus_server
def test_milvus_server_down_for_5_seconds_mid_run(stoppable_milvus, tmp_path):
    milvus_outage(stoppable_milvus, tmp_path, 5)


@pytest.mark.slow
@pytest.mark.milvus_server
def test_milvus_server_down_for_60_seconds_mid_run(stoppable_milvus, tmp_path):
    milvus_outage(stoppable_milvus, tmp_path, 60)
