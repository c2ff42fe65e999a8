"""The run summary's outcome words and exit codes: one table for ``clip-ingest`` and the scheduled
passes of ``clip-search serve`` (real Qdrant Edge, real tiny model; a store fault injected)."""

from __future__ import annotations

import json
import time

from clip_ingest.connectors.backends import StoreError, open_store
from clip_ingest.connectors.cli import common
from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.ingest.summary import OUTCOMES
from clip_ingest.connectors.serve.scheduled_ingest import ScheduledIngest
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
    scheduled = ScheduledIngest(
        faulty, tiny_embedder, IngestOptions(collection="images", directories=[str(folder)], workers=1),
        every_s=3600, lock_path=str(tmp_path / "run.lock"), summary_path=None, last_run_path=str(last_run),
        summary_fields={"target": "qdrant-edge", "location": str(tmp_path / "edge"), "collection": "images"})
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
