"""Test helper: ``clip-search serve``'s app on a real uvicorn server on a loopback port, over a real store."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import uvicorn

from clip_ingest.connectors.backends import Point, TransientStoreError, open_store
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.serve.app import Metrics, create_app
from clip_ingest.connectors.serve.scheduled_ingest import ScheduledIngest
from clip_ingest.connectors.serve.service import SearchService

from imagegen import make_shape_image, write_shape_folder
from planted_duplicates import planted
from search_helpers import plant_shapes

#: the text whose answer is planted: a point stored with exactly this text's vector
PLANTED_TEXT = "the planted answer"


def plant_collection(store, embedder, folder: Path) -> tuple[list[Point], Point]:
    """The shapes of ``folder`` plus one point whose vector is ``PLANTED_TEXT``'s embedding (a red
    square picture), so a text query has a known first answer through the real model."""
    points = plant_shapes(store, embedder, folder)
    path = folder / "planted.png"
    make_shape_image("red", "square", size=96, variant=3).save(path)
    planted = Point(str(uuid.uuid4()), embedder.embed_texts([PLANTED_TEXT])[0], {"path": str(path), "colour": "red", "shape": "planted"})
    store.upsert([planted])
    store.flush()
    return points, planted


class FailingStore:
    """Failure injection around a real store: every call raises while ``down`` is set."""

    def __init__(self, store) -> None:
        self.store, self.down = store, False

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise TransientStoreError("connection refused (injected)")
            return attr(*args, **kwargs)

        return call


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(store, embedder, *, serialise_store: bool = True, collection: str = "shapes",
                   ingest: Callable[[SearchService, Metrics], ScheduledIngest] | None = None,
                   **app_options) -> Iterator[tuple[str, SearchService]]:
    """``(base_url, service)`` of a server running in a thread until the block ends; ``ingest``
    makes the server's scheduled ingestion from its service (started with the server)."""
    metrics = Metrics()
    service = SearchService(store, embedder, serialise_store=serialise_store, collection=collection, on_batch=metrics.batch.observe,
                            on_image_batch=metrics.image_batch.observe)
    scheduled = ingest(service, metrics) if ingest else None
    app = create_app(service, metrics=metrics, ingest=scheduled, **app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    if scheduled:
        scheduled.start()
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(10)
        if scheduled:
            scheduled.close()
        service.close()


@pytest.fixture(scope="module", params=["qdrant-edge", "milvus"])
def served(request, tmp_path_factory, tiny_embedder):
    """``(client, service, points, planted, folder)``: the tiny model served over 12 shapes and
    the planted text answer, in Qdrant Edge and in Milvus Lite (one server per module and store)."""
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    folder = write_shape_folder(root / "photos", n=12)
    location = {"qdrant-edge": {"path": str(root / "edge")}, "milvus": {"uri": str(root / "milvus.db")}}[request.param]
    store = open_store(request.param, "shapes", **location)
    points, planted = plant_collection(store, tiny_embedder, folder)
    with running_server(store, tiny_embedder) as (url, service):
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, service, points, planted, folder
    store.close()


@contextmanager
def serve_process(command: list[str], port: int, timeout_s: float = 120) -> Iterator[subprocess.Popen]:
    """A ``clip-search serve`` subprocess, once ``/readyz`` answers 200; stopped by SIGTERM at the
    end (its output is then in ``process.output``)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise AssertionError(f"the server exited {process.returncode}: {process.stdout.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("the server did not become ready")
            time.sleep(0.3)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.output = process.communicate(timeout=60)[0]


@contextmanager
def serving_planted_duplicates(embedder, root: Path, seeds: range, edited: int) -> Iterator[tuple[str, SearchService, dict[str, set[str]]]]:
    """``(base_url, service, groups)``: ``embedder`` (the starter model, which calibrates) served over
    :func:`planted_duplicates.planted` groups in Qdrant Edge, with its own calibration cache
    under ``root`` (measured by the first request that needs it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIP_INGEST_CACHE", str(root / "cache"))
        truth = planted(root / "photos", seeds, edited)
        store = open_store("qdrant-edge", "dups", path=str(root / "edge"))
        try:
            run_ingest(store, embedder, IngestOptions(collection="dups", directories=[str(root / "photos")], progress=False))
            with running_server(store, embedder, collection="dups") as (url, service):
                yield url, service, truth
        finally:
            store.close()

