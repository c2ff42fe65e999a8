"""A run never hangs on one file: a read that stalls (a hung network mount) fails that file alone
after ``--read-timeout``, and SIGTERM ends a run stuck in such a read at once, with its summary
written, the lock free and exit 143. The stall is injected (a read that blocks, as one blocked in
the kernel does); everything else is the real pipeline, store and CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.ingest.reader import ReadTimeout, TimedReader

from ingest_helpers import all_paths, ingest
from reliability_helpers import StallRead, install_stalled_read, read_json, run_cli, start_cli, wait_for_file, write_corpus


def test_a_stalled_read_fails_that_file_alone_and_the_next_run_retries_it(tmp_path, tiny_embedder):
    root = write_corpus(tmp_path / "photos", 12)
    stuck = sorted(root.rglob("*.png"))[3]
    release = install_stalled_read(stuck.name)
    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    dead = tmp_path / "dead.jsonl"
    try:
        started = time.monotonic()
        stats = ingest(store, tiny_embedder, root, collection="images", read_timeout=1.0, dead_letter=str(dead))
        assert time.monotonic() - started < 60
    finally:
        release()
    assert stats.failed == 1 and stats.new == 11
    (record,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert record["path"] == str(stuck) and record["reason"] == "timeout" and "stalled" in record["detail"]
    again = ingest(store, tiny_embedder, root, collection="images", dead_letter=str(dead))
    assert again.new == 1 and len(all_paths(store)) == 12
    store.close()


def test_the_reader_replaces_a_stuck_thread_and_abort_frees_every_waiter():
    import threading

    gate = threading.Event()

    def read(path: str) -> bytes:
        if path == "stuck":
            gate.wait()
        return path.encode()

    reader = TimedReader(1, timeout=0.3, read=read)
    slow = TimedReader(1, timeout=3600, read=read)
    try:
        with pytest.raises(ReadTimeout, match="took over"):
            reader.read("stuck")
        assert reader.abandoned == 1 and reader.read("fine") == b"fine"  # a fresh thread took over
        threading.Timer(0.2, slow.abort).start()
        with pytest.raises(ReadTimeout, match="stopped"):  # a stopping run does not wait an hour
            slow.read("stuck")
    finally:
        gate.set()
        reader.close()
        slow.close()


def test_sigterm_ends_a_run_stuck_in_a_read_at_once(tmp_path):
    root = write_corpus(tmp_path / "photos", 10)
    stuck = sorted(root.rglob("*.png"))[5]
    summary = tmp_path / "s.json"
    args = [str(root), "--data-dir", str(tmp_path / "data"), "--batch-size", "2", "--summary", str(summary),
            "--read-timeout", "3600"]  # only SIGTERM can end this run
    reached = tmp_path / "reached"
    run = start_cli(args, tmp_path, hook=StallRead(stuck.name, str(reached)))
    wait_for_file(reached, run)
    stopped_at = time.monotonic()
    os.kill(run.process.pid, signal.SIGTERM)
    stopped = run.wait(timeout=60)
    assert time.monotonic() - stopped_at < 30, "SIGTERM did not end the stuck run promptly"
    assert stopped.exit_code == 143, stopped.output[-3000:]
    assert "interrupted by SIGTERM" in stopped.stderr and read_json(summary)["interrupted"] is True
    again = run_cli([*args[:-2], "--lock-timeout", "0"], tmp_path)  # lock free; no stall now: completes
    assert again.exit_code == 0, again.output[-3000:]
    assert read_json(summary)["failed"] == 0 and Path(summary).exists()


def test_abort_fails_queued_reads_without_killing_the_read_thread():
    """Reads queued behind a hung one are failed by ``abort``; the thread that reaches them later
    skips them (it used to die with 'Future in unexpected state')."""
    import threading

    release = threading.Event()
    errors: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    reader = TimedReader(1, timeout=3600, read=lambda path: (release.wait(10), b"x")[1])
    try:
        results: list[BaseException | bytes] = []

        def read(path: str) -> None:
            try:
                results.append(reader.read(path))
            except ReadTimeout as exc:
                results.append(exc)

        callers = [threading.Thread(target=read, args=(f"/f{i}",)) for i in range(3)]
        for caller in callers:
            caller.start()
        time.sleep(0.3)  # one read hangs, two wait in the queue
        reader.abort()
        for caller in callers:
            caller.join(5)
        release.set()
        time.sleep(0.3)  # the thread comes back and meets the two settled futures
        assert len(results) == 3 and all(isinstance(r, ReadTimeout) for r in results)
        assert errors == []
    finally:
        threading.excepthook = previous
        reader.close()
