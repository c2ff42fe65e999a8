"""Who holds a collection, said by the refused run: the run lock records its holder's command and
pid; ``clip-search serve`` on an embedded store holds it while it serves, so a cron ``clip-ingest``
beside it exits 4 naming the server and saying how to ingest through it (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import MODEL, cli, workdir  # noqa: F401 - workdir is a fixture
from clip_ingest.connectors.ingest.lock import LockedError, RunLock, read_holder
from serve_helpers import free_port, serve_process


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("store", [("--target", "qdrant-edge"), ("--target", "milvus")], ids=["qdrant-edge", "milvus-lite"])
def test_a_cron_run_beside_a_server_on_the_embedded_store_names_the_server(workdir, shape_folder, store):
    """The server serves collection ``images``; a cron run into ``images`` is refused by the run
    lock, and on Milvus Lite (one process per file) so is a run into another collection."""
    common_args = [*store, "--data-dir", str(workdir / "data"), *MODEL]
    first = subprocess.run([sys.executable, "-m", "clip_ingest.connectors.cli.ingest", str(shape_folder), *common_args, "-q"],
                           capture_output=True, text=True, timeout=300)  # a process of its own: it lets go of Milvus Lite
    assert first.returncode == 0, first.stderr
    port = free_port()
    command = [sys.executable, "-m", "clip_ingest.connectors.cli.search", "serve", *common_args, "--port", str(port)]
    collections = ["images", "other"] if store[1] == "milvus" else ["images"]
    with serve_process(command, port) as server:
        for collection in collections:
            result = cli(str(shape_folder), *common_args, "--collection", collection, "--summary", f"{collection}.json")
            message = one_line(result.output)
            assert result.exit_code == 4, result.output
            assert f"held by clip-search serve (pid {server.pid} " in message
            assert "--ingest-every" in message and "POST /v1/ingest" in message and "database server" in message
            summary = json.loads(Path(f"{collection}.json").read_text())
            assert (summary["outcome"], summary["exit_code"], summary["new"]) == ("locked", 4, 0)
            assert f"pid {server.pid}" in summary["error"]
        status = cli("status", *common_args)
        assert status.exit_code == 4 and f"held by clip-search serve (pid {server.pid} " in status.output, status.output
    assert cli(str(shape_folder), *common_args).exit_code == 0  # the server is gone: the lock is free


def test_a_lock_held_by_another_process_is_named_and_taken_over_when_it_dies(workdir, shape_folder):
    """A running clip-ingest (here: a process holding the run lock) is named by a refused run and by
    ``status``, which does not open the embedded store meanwhile; once it is killed, the next run goes."""
    lock = workdir / "run.lock"
    Path("clip-ingest.toml").write_text(f"[ingest]\nlock_file = {str(lock)!r}\n")  # read by the run and by status
    assert cli(str(shape_folder), *MODEL).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom clip_ingest.connectors.ingest.lock import RunLock\n"
         f"lock = RunLock({str(lock)!r})\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli(str(shape_folder), *MODEL, "--summary", "s.json")
        assert result.exit_code == 4 and f"clip-ingest (pid {holder.pid} " in one_line(result.output), result.output
        assert "--lock-timeout" in result.output
        assert json.loads(Path("s.json").read_text())["outcome"] == "locked"
        status = cli("status")
        assert status.exit_code == 4 and f"held by clip-ingest (pid {holder.pid} " in status.output, status.output
        with pytest.raises(LockedError) as refused:
            RunLock(lock).acquire()
        assert refused.value.holder is not None and refused.value.holder.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while read_holder(lock) is not None:  # the pid recorded is gone: nobody holds it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cli(str(shape_folder), *MODEL).exit_code == 0
    assert cli("status").exit_code == 0


def test_a_released_lock_records_no_holder(tmp_path):
    with RunLock(tmp_path / "run.lock", command="clip-ingest"):
        held = read_holder(tmp_path / "run.lock")
        assert held is not None and (held.command, held.pid) == ("clip-ingest", os.getpid())
    assert read_holder(tmp_path / "run.lock") is None

