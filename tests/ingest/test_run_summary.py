"""The run summary's outcome words and exit codes: one table for ``clip-ingest`` and the scheduled
passes of ``clip-search serve`` (real Qdrant Edge, real tiny model; a store fault injected)."""

from __future__ import annotations

import json
import shutil
import time

from click.testing import CliRunner

from clip_ingest.connectors.backends import StoreError, open_store
from clip_ingest.connectors.cli import common
from clip_ingest.connectors.cli.ingest import main as ingest_main
from clip_ingest.connectors.config import StoreTarget
from clip_ingest.connectors.ingest.job import IngestJob
from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.ingest.summary import OUTCOMES
from clip_ingest.connectors.serve.scheduled_ingest import ScheduledIngest
from conftest import TINY_SPEC
from imagegen import write_shape_folder
from ingest_helpers import FaultyStore


def test_summary_outcome_words_match_the_exit_codes():
    codes = {name: getattr(common, name) for name in common.__all__ if name.startswith("EXIT_")}
    assert set(codes.values()) <= set(OUTCOMES), "an exit code without an outcome word"
    assert {name: OUTCOMES[code] for name, code in codes.items()} == {
        "EXIT_OK": "ok", "EXIT_FATAL": "fatal", "EXIT_USAGE": "usage", "EXIT_FAILED_FILES": "failed_files",
        "EXIT_LOCKED": "locked", "EXIT_PRUNE_REFUSED": "prune_refused", "EXIT_INTERRUPTED": "interrupted",
        "EXIT_TERMINATED": "interrupted",
    }


def _wait_runs(scheduled: ScheduledIngest, runs: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while (status := scheduled.status())["runs"] < runs or status["running"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status["last"]


def test_a_failed_scheduled_pass_records_the_fatal_outcome_and_the_next_pass_recovers(tmp_path, tiny_embedder):
    folder = write_shape_folder(tmp_path / "photos", n=4)
    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    faulty = FaultyStore(store, "upsert", StoreError("disk full"))
    last_run = tmp_path / "last-run.json"
    edge = str(tmp_path / "edge")
    job = IngestJob(StoreTarget("qdrant-edge", {"path": edge}, edge, embedded=True),
                    IngestOptions(collection="images", directories=[str(folder)], workers=1),
                    lock_path=str(tmp_path / "run.lock"), last_run_path=str(last_run))
    scheduled = ScheduledIngest(faulty, tiny_embedder, job, every_s=3600)
    scheduled.start()
    try:
        first = _wait_runs(scheduled, 1)
        assert (first["outcome"], first["exit_code"]) == ("fatal", 1) and "disk full" in first["error"]
        assert json.loads(last_run.read_text())["outcome"] == "fatal"
        assert scheduled.trigger()
        second = _wait_runs(scheduled, 2)
        assert (second["outcome"], second["exit_code"], second["new"]) == ("ok", 0, 4)
        assert second["started_at"] <= second["finished_at"] and second["failed_files"] == []
        assert json.loads(last_run.read_text()) == second
    finally:
        scheduled.close()
        store.close()


def test_a_scheduled_pass_ends_as_clip_ingest_does_when_its_folder_is_gone(tmp_path, tiny_embedder):
    """The same job, the same outcome: a source folder gone (an unmounted disk) is a usage error,
    2 ``usage``, for a cron run and for a server's scheduled pass alike."""
    folder = write_shape_folder(tmp_path / "photos", n=2)
    edge = str(tmp_path / "edge")
    shutil.rmtree(folder)
    cron = CliRunner().invoke(ingest_main, [str(folder), "--target", "qdrant-edge", "--qdrant-path", edge, "--model", TINY_SPEC,
                                            "--data-dir", str(tmp_path / "data"), "--summary", str(tmp_path / "cron.json")])
    assert cron.exit_code == 2 and "not found" in cron.output, cron.output
    store = open_store("qdrant-edge", "images", path=edge)
    job = IngestJob(StoreTarget("qdrant-edge", {"path": edge}, edge, embedded=True),
                    IngestOptions(collection="images", directories=[str(folder)], workers=1), lock_path=str(tmp_path / "run.lock"))
    scheduled = ScheduledIngest(store, tiny_embedder, job, every_s=3600)
    scheduled.start()
    try:
        served = _wait_runs(scheduled, 1)
    finally:
        scheduled.close()
        store.close()
    expected = json.loads((tmp_path / "cron.json").read_text())
    assert (served["outcome"], served["exit_code"], served["error"]) == ("usage", 2, expected["error"])
