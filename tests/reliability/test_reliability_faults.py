"""Database faults during a ``clip-ingest`` run: failing writes and a Milvus server that goes away.

Faults are injected around the real database client (:class:`reliability_helpers.FlakyClient`),
raising that client's own exceptions, or by stopping the real Milvus server. Documented outcome
(docs/guarantees.md): transient store errors are retried with exponential
backoff for ``--retry-for`` seconds (120 by default); a run whose retries run out exits 1, and a
re-run completes. Either way nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from pymilvus import MilvusClient

from clip_ingest.connectors.backends.base import CollectionSpec, Point, TransientStoreError
from clip_ingest.connectors.backends.milvus.store import MilvusStore

from milvus_server import MilvusServer
from reliability_helpers import (
    PausePoint,
    Target,
    move_image,
    run_cli,
    start_cli,
    wait_for_file,
    write_corpus,
    write_numbered,
)

EXIT_FATAL = 1


def run_args(target: Target, root: Path) -> list[str]:
    return [str(root), *target.args, "--prune", "--batch-size", "8"]


def change(root: Path, first_new: int, count: int) -> None:
    """Move ``count`` images to another folder and add ``count`` new ones (writes of both kinds)."""
    for path in sorted(root.rglob("*.png"))[:count]:
        move_image(path, int(path.parent.name[1:]) + 1)
    for index in range(first_new, first_new + count):
        write_numbered(root, index)


@pytest.fixture(params=["qdrant-client", "milvus-lite"])
def networked(request, tmp_path) -> Target:
    """A backend whose client reports a dead server as a retryable error."""
    return Target.for_param(request, tmp_path)


@pytest.fixture(params=["qdrant-client", "qdrant"])
def qdrant_target(request, tmp_path) -> Target:
    return Target.for_param(request, tmp_path)


def test_flaky_client_writes_are_retried_and_repeated_writes_change_nothing(networked, tmp_path):
    """The real client's first write fails twice, then 30% of writes fail (half after being applied).

    The client raises what it raises for a dead server (qdrant-client: a refused connection;
    pymilvus: UNAVAILABLE after its own retries); both runs complete with every image once.
    """
    root = write_corpus(tmp_path / "photos", 60)
    first = run_cli(run_args(networked, root), tmp_path, hook=networked.faults(seed=1, rate=0.3, outage=(1, 2)))
    assert first.exit_code == 0, first.output[-3000:]
    assert "retrying" in first.stderr and "injected outage" in first.stderr
    change(root, 60, 8)
    second = run_cli(run_args(networked, root), tmp_path, hook=networked.faults(seed=2, rate=0.3))
    assert second.exit_code == 0, second.output[-3000:]
    assert "applied, reply lost" in second.stderr
    networked.check(root)


def test_writes_failing_longer_than_the_retries_exit_1_and_a_rerun_completes(qdrant_target, tmp_path):
    """qdrant-client: a server down for good exhausts the retries. Qdrant Edge: a failing disk is not retried."""
    root = write_corpus(tmp_path / "photos", 60)
    args = run_args(qdrant_target, root)
    assert run_cli(args, tmp_path, hook=qdrant_target.faults(seed=3)).exit_code == 0
    change(root, 60, 10)
    failed = run_cli([*args, "--retry-for", "3"], tmp_path, hook=qdrant_target.faults(seed=3, outage=(2, 100)))
    assert failed.exit_code == EXIT_FATAL, failed.output[-3000:]
    assert "injected outage" in failed.stderr and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert ("retrying" in failed.stderr) == (qdrant_target.name == "qdrant-client")
    rerun = run_cli(args, tmp_path, hook=qdrant_target.faults(seed=3))
    assert rerun.exit_code == 0, rerun.output[-3000:]
    qdrant_target.check(root)


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


def milvus_outage(server: MilvusServer, tmp_path: Path, outage_s: float, while_down: Callable[[], None] = lambda: None) -> None:
    """Ingest, change the corpus, stop the server in the middle of the next run, start it again.

    The outage is shorter than ``--retry-for``, so the run rides it out and exits 0 (the
    server comes back on the same port: see .ci/milvus-server.sh). ``while_down`` runs during
    the outage, which it does not lengthen unless it takes longer than ``outage_s``.
    """
    root = write_corpus(tmp_path / "photos", 200)
    target = Target("milvus-server", tmp_path / "data", server.uri)
    args = run_args(target, root)
    assert run_cli(args, tmp_path).exit_code == 0
    change(root, 200, 40)
    reached, resume = tmp_path / "reached", tmp_path / "resume"
    run = start_cli(args, tmp_path, hook=PausePoint("decode", 1, str(reached), str(resume)))
    wait_for_file(reached, run)
    uri = server.uri
    server.stop()
    down = time.monotonic()
    resume.touch()  # the run goes on against a dead server
    while_down()
    time.sleep(max(0.0, outage_s - (time.monotonic() - down)))
    server.start()
    assert server.uri == uri
    result = run.wait()
    assert result.exit_code == 0, result.output[-3000:]
    assert "retrying" in result.stderr
    target.check(root)


@pytest.mark.milvus_server
def test_milvus_server_down_for_5_seconds_mid_run(stoppable_milvus, tmp_path):
    milvus_outage(stoppable_milvus, tmp_path, 5)


@pytest.mark.slow
@pytest.mark.milvus_server
def test_milvus_server_down_for_60_seconds_mid_run(stoppable_milvus, tmp_path):
    """Also, during the outage: a store connected before it reports reads and writes as transient errors."""
    store = MilvusStore(f"down_{uuid.uuid4().hex[:12]}", uri=stoppable_milvus.uri, timeout=2)
    store.ensure_collection(CollectionSpec(name="down", dim=64, model_id="m"))

    def calls_fail_transiently() -> None:
        with pytest.raises(TransientStoreError):
            store.count()
        with pytest.raises(TransientStoreError):
            store.upsert([Point(id=str(uuid.uuid4()), vector=np.ones(64, np.float32), payload={})])

    try:
        milvus_outage(stoppable_milvus, tmp_path, 60, calls_fail_transiently)
    finally:
        store.close()
        MilvusClient(uri=stoppable_milvus.uri).drop_collection(store.collection)
