"""Fresh data while serving an embedded store: ``clip-search serve --ingest-every`` runs the same
incremental ingestion as ``clip-ingest`` inside the server (real Qdrant Edge, real uvicorn)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.cli.serve import parse_duration
from clip_ingest.connectors.config import StoreTarget
from clip_ingest.connectors.ingest.job import IngestJob
from clip_ingest.connectors.ingest.lock import RunLock
from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.serve.scheduled_ingest import ScheduledIngest

from imagegen import make_shape_image
from ingest_helpers import all_paths, ingest
from serve_helpers import free_port, running_server, serve_process


def _wait_runs(client: httpx.Client, runs: int, timeout_s: float = 120) -> dict:
    """The ``ingest`` status of ``/v1/info`` once ``runs`` passes have finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get("/v1/info").json()["ingest"]
        if status["runs"] >= runs and not status["running"]:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def _add_images(folder: Path, colours: list[str], start: int) -> list[Path]:
    paths = []
    for i, colour in enumerate(colours, start):
        path = folder / f"new-{i}.png"
        make_shape_image(colour, "circle", size=64, variant=i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def collection(tmp_path, tiny_embedder):
    folder = tmp_path / "photos"
    folder.mkdir()
    _add_images(folder, ["red", "blue"], 0)
    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    ingest(store, tiny_embedder, folder, collection="images")
    yield store, folder
    store.close()


def _job(tmp_path: Path, options: IngestOptions, **paths) -> IngestJob:
    """A pass over ``options`` into the Qdrant Edge store under ``tmp_path``, locked by ``run.lock``."""
    edge = str(tmp_path / "edge")
    return IngestJob(StoreTarget("qdrant-edge", {"path": edge}, edge, embedded=True), options,
                     lock_path=str(tmp_path / "run.lock"), **paths)


def _scheduler(tmp_path: Path, folder: Path, embedder, **options):
    def make(service, metrics):
        job = _job(tmp_path, IngestOptions(collection="images", directories=[str(folder)], workers=2, batch_size=8,
                                           dead_letter=str(tmp_path / "dead.jsonl"), **options),
                   summary_path=str(tmp_path / "summary.json"))
        return ScheduledIngest(service.store, embedder, job, every_s=3600,
                               on_outcome=lambda outcome: metrics.ingest_runs.labels(outcome).inc())
    return make


def test_the_server_ingests_new_moved_and_deleted_files_while_it_answers(tmp_path, collection, tiny_embedder):
    store, folder = collection
    with running_server(store, tiny_embedder, collection="images",
                        ingest=_scheduler(tmp_path, folder, tiny_embedder, prune=True)) as (url, service):
        with httpx.Client(base_url=url, timeout=30) as client:
            first = _wait_runs(client, 1)  # a pass at start: nothing changed
            assert first["last"]["outcome"] == "ok" and first["last"]["embedded"] == 0 and first["last"]["unchanged"] == 2
            assert first["next_in_s"] > 3500  # then hourly
            added = _add_images(folder, ["green", "yellow", "red"], 2)
            (folder / "new-0.png").rename(folder / "renamed.png")
            (folder / "new-1.png").unlink()
            assert client.post("/v1/ingest").status_code == 202
            last = _wait_runs(client, 2)["last"]
            assert (last["new"], last["moved"], last["pruned"], last["embedded"]) == (3, 1, 1, 3), last
            assert client.get("/v1/info").json()["count"] == 4
            assert all_paths(service.store) == sorted(str(p) for p in added + [folder / "renamed.png"])
            # a new file is searchable through the same server at once
            body = client.post("/v1/search/image", files={"file": ("q.png", added[1].read_bytes(), "image/png")}).json()
            assert body["hits"][0]["payload"]["path"] == str(added[1])
            assert json.loads((tmp_path / "summary.json").read_text())["new"] == 3  # the cron run's summary file
            metrics = client.get("/metrics").text
            assert 'clip_search_ingest_runs_total{outcome="ok"} 2.0' in metrics


def test_a_bad_file_a_held_lock_and_a_trigger_during_a_pass_never_stop_the_server(tmp_path, collection, tiny_embedder):
    store, folder = collection
    lock = RunLock(tmp_path / "run.lock")
    lock.acquire()  # another clip-ingest is running: the first pass is skipped, not failed
    with running_server(store, tiny_embedder, collection="images",
                        ingest=_scheduler(tmp_path, folder, tiny_embedder)) as (url, _service):
        with httpx.Client(base_url=url, timeout=30) as client:
            status = _wait_runs(client, 1)
            assert status["last"]["outcome"] == "locked" and "pid" in status["last"]["error"]
            lock.release()
            (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
            _add_images(folder, ["green"], 5)
            assert client.post("/v1/ingest").json()["started"] is True
            last = _wait_runs(client, 2)["last"]
            assert last["outcome"] == "failed_files" and (last["new"], last["failed"]) == (1, 1)
            dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
            assert [Path(d["path"]).name for d in dead] == ["broken.jpg"]
            assert client.get("/v1/search", params={"text": "a green circle"}).status_code == 200
            assert client.get("/v1/info").json()["count"] == 3


class _SlowEmbedder:
    """The real embedder, slowed down per image batch (so that a stop lands inside a pass) and
    announcing its first batch. Delay injection only: the vectors are the real model's."""

    def __init__(self, inner) -> None:
        self.inner, self.started = inner, threading.Event()
        self.dim, self.model_id = inner.dim, inner.model_id

    def embed_images(self, items):
        self.started.set()
        time.sleep(0.2)
        return self.inner.embed_images(items)

    def embed_texts(self, texts):
        return self.inner.embed_texts(texts)


def test_stopping_the_server_mid_pass_keeps_what_was_embedded_and_frees_the_lock(tmp_path, collection, tiny_embedder):
    from clip_ingest.connectors.serve.service import LockedStore

    store, folder = collection
    _add_images(folder, ["red", "green", "blue", "yellow"] * 10, 10)
    slow = _SlowEmbedder(tiny_embedder)
    scheduled = ScheduledIngest(
        LockedStore(store), slow, _job(tmp_path, IngestOptions(collection="images", directories=[str(folder)], workers=1,
                                                               batch_size=2)), every_s=3600)
    scheduled.start()
    assert slow.started.wait(60)
    scheduled.close()
    last = scheduled.status()["last"]
    assert last["outcome"] == "interrupted" and last["interrupted"] is True and 0 < last["new"] < 40, last
    assert len(all_paths(store)) == 2 + last["new"]  # what was embedded is stored
    with RunLock(tmp_path / "run.lock"):  # released
        pass
    rest = ingest(store, tiny_embedder, folder, collection="images")  # a re-run completes the work
    assert rest.new == 40 - last["new"] and len(all_paths(store)) == 42


def test_without_ingest_every_the_trigger_is_404(tmp_path, collection, tiny_embedder):
    store, _ = collection
    with running_server(store, tiny_embedder, collection="images") as (url, _):
        assert httpx.post(url + "/v1/ingest").status_code == 404
        assert httpx.get(url + "/v1/info").json()["ingest"] is None


def test_durations_and_usage_errors():
    assert [parse_duration(t) for t in ("90", "30s", "15m", "1.5h", "1d")] == [90, 30, 900, 5400, 86400]
    runner = CliRunner()
    for args, message in ((["serve", "--ingest", "."], "needs --ingest-every"),
                          (["serve", "--ingest-every", "0"], "positive duration"),
                          (["serve", "--ingest-every", "soon", "--ingest", "."], "positive duration"),
                          (["serve", "--ingest-every", "1h"], "give the folders"),
                          (["serve", "--ingest-every", "1h", "--ingest", "/no/such/folder"], "not found")):
        result = runner.invoke(search_main, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_the_serve_command_ingests_on_a_schedule_and_stops_cleanly(tmp_path, tiny_embedder):
    """The real command: ``clip-ingest`` once, then ``serve --ingest-every`` on the same embedded
    store, new files picked up by ``POST /v1/ingest``; SIGTERM ends it and releases the lock."""
    import subprocess

    folder = tmp_path / "photos"
    folder.mkdir()
    _add_images(folder, ["red", "blue"], 0)
    common = ["--target", "qdrant-edge", "--collection", "images", "--data-dir", str(tmp_path / "data"), "--model", "clip-ingest-tiny:random"]
    first = subprocess.run([sys.executable, "-m", "clip_ingest.connectors.cli.ingest", str(folder), *common, "-q"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    port = free_port()
    summary = tmp_path / "summary.json"
    (tmp_path / "clip-ingest.toml").write_text(f'[ingest]\nsummary = "{summary}"\nprune = true\n')
    command = [sys.executable, "-m", "clip_ingest.connectors.cli.search", "serve", *common, "--port", str(port),
               "--config", str(tmp_path / "clip-ingest.toml"), "--ingest-every", "1h", "--ingest", str(folder)]
    with serve_process(command, port) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_runs(client, 1)
            _add_images(folder, ["green"], 2)
            assert client.post("/v1/ingest").status_code == 202
            assert _wait_runs(client, 2)["last"]["new"] == 1 and client.get("/v1/info").json()["count"] == 3
            assert json.loads(summary.read_text())["collection"] == "images"
    assert "shutdown complete" in server.output, server.output
    # the lock is free again: a later clip-ingest (server stopped) runs at once, nothing to do
    again = subprocess.run([sys.executable, "-m", "clip_ingest.connectors.cli.ingest", str(folder), *common, "--summary",
                            str(tmp_path / "after.json")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "after.json").read_text())["embedded"] == 0
