"""Test helper: ``clip-search serve``'s app on a real uvicorn server on a loopback port, over a real store."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn

from clip_ingest.connectors.backends import Point
from clip_ingest.connectors.serve.app import Metrics, create_app
from clip_ingest.connectors.serve.service import SearchService

from imagegen import make_shape_image
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(store, embedder, *, serialise_store: bool = True, **app_options) -> Iterator[tuple[str, SearchService]]:
    """``(base_url, service)`` of a server running in a thread until the block ends."""
    metrics = Metrics()
    service = SearchService(store, embedder, serialise_store=serialise_store, collection="shapes", on_batch=metrics.batch.observe)
    app = create_app(service, metrics=metrics, **app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(10)
        service.close()
