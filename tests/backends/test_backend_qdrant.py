"""Qdrant connectors: the shared contract on Qdrant Edge and qdrant-client local mode, plus Qdrant specifics."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from backend_contract import COLLECTION, SPEC, VectorStoreContract, pid, point

from clip_ingest.connectors.backends import (
    CollectionSpec,
    ModelMismatchError,
    StoreError,
    TransientStoreError,
    VectorStore,
    open_store,
)
from clip_ingest.connectors.backends.qdrant.client_store import QdrantClientStore
from clip_ingest.connectors.backends.qdrant.edge_store import QdrantEdgeStore
from clip_ingest.connectors.filters import parse_filter

SECRET = "sekrit-api-key-0123456789"

# qdrant-client warns (rightly) when a key goes over plain http; the local test servers are http
pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


class TestQdrantLocalModeContract(VectorStoreContract):
    def make_store(self, tmp_path: Path, collection: str) -> VectorStore:
        return QdrantClientStore(collection, path=str(tmp_path / "local"))


# -- target resolution ---------------------------------------------------------------------


def test_qdrant_target_without_url_is_qdrant_edge(tmp_path: Path) -> None:
    store = open_store("qdrant", "c", path=str(tmp_path), url=None, api_key=None)
    assert isinstance(store, QdrantEdgeStore)


def test_qdrant_target_with_url_or_memory_is_the_client_store() -> None:
    remote = open_store("qdrant", "c", url="http://127.0.0.1:1", timeout=1)
    memory = open_store("qdrant", "c", location=":memory:")
    try:
        assert isinstance(remote, QdrantClientStore) and isinstance(memory, QdrantClientStore)
    finally:
        remote.close()
        memory.close()


def test_server_only_options_without_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_key"):
        open_store("qdrant", "c", path=str(tmp_path), api_key=SECRET)


def test_client_store_needs_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        QdrantClientStore("c")
    with pytest.raises(ValueError, match="exactly one"):
        QdrantClientStore("c", url="http://127.0.0.1:1", path=str(tmp_path))


# -- collection metadata -------------------------------------------------------------------


def test_edge_model_record_lives_beside_the_shard(tmp_path: Path) -> None:
    with QdrantEdgeStore(COLLECTION, path=tmp_path) as store:
        store.ensure_collection(SPEC)
    record = json.loads((tmp_path / COLLECTION / "clip_ingest.json").read_text())
    assert (record["model_id"], record["dim"]) == (SPEC.model_id, SPEC.dim)


def test_client_collection_created_by_another_tool_is_not_adopted(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    raw = QdrantClient(path=str(tmp_path))
    raw.create_collection("foreign", vectors_config=models.VectorParams(size=SPEC.dim, distance=models.Distance.COSINE))
    raw.close()
    with QdrantClientStore("foreign", path=str(tmp_path)) as store:
        with pytest.raises(ModelMismatchError, match="unrecorded"):
            store.ensure_collection(SPEC)
        store.ensure_collection(SPEC, recreate=True)
        assert store.collection_model() == (SPEC.model_id, SPEC.dim)


def test_edge_creates_a_payload_index_per_indexed_field(tmp_path: Path) -> None:
    import qdrant_edge as edge

    with QdrantEdgeStore(COLLECTION, path=tmp_path) as store:
        store.ensure_collection(SPEC)
    shard = edge.EdgeShard.load(str(tmp_path / COLLECTION / "shard"))
    try:
        schema = {name: info.data_type for name, info in shard.info().payload_schema.items()}
    finally:
        shard.close()
    assert schema == {
        "colour": edge.PayloadSchemaType.Keyword,
        "index": edge.PayloadSchemaType.Integer,
        "weight": edge.PayloadSchemaType.Float,
        "ok": edge.PayloadSchemaType.Bool,
        "taken": edge.PayloadSchemaType.Float,  # dates are Unix seconds: the float index
    }


def test_edge_replaces_an_index_of_another_type_on_reopen(tmp_path: Path) -> None:
    """A collection whose ``taken`` got Qdrant's datetime index (what ``datetime`` once created)
    answers no date range; ensuring it with SPEC again puts the float index in its place."""
    import qdrant_edge as edge

    with QdrantEdgeStore(COLLECTION, path=tmp_path) as store:
        store.ensure_collection(CollectionSpec(COLLECTION, SPEC.dim, SPEC.model_id))
        store.upsert([point(n, taken=1_559_347_200.0 + n * 86_400) for n in range(4)])
    shard = edge.EdgeShard.load(str(tmp_path / COLLECTION / "shard"))
    try:
        shard.update(edge.UpdateOperation.create_field_index("taken", edge.PayloadSchemaType.Datetime))
    finally:
        shard.close()
    june_2 = parse_filter("taken >= 2019-06-02")
    with QdrantEdgeStore(COLLECTION, path=tmp_path) as store:
        assert store.count(filter=june_2) == 0  # the wrong index, as found
        store.ensure_collection(SPEC)
        assert store.count(filter=june_2) == 3


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "."])
def test_edge_collection_name_must_be_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="collection name"):
        QdrantEdgeStore(name, path=tmp_path)


@pytest.mark.parametrize("make", [QdrantEdgeStore, QdrantClientStore], ids=["edge", "local-mode"])
def test_reads_of_a_missing_store_folder_create_nothing(tmp_path: Path, make) -> None:
    folder = tmp_path / "clip-ingest-data" / "qdrant"
    store = make(COLLECTION, path=str(folder))
    assert store.collection_model() is None and store.aliases() == {} and store.collections() == []
    for read in (lambda: store.search(point(0).vector, k=3), store.count, lambda: list(store.scroll())):
        with pytest.raises(StoreError, match="does not exist.*ingest first"):
            read()
    store.close()
    assert not (tmp_path / "clip-ingest-data").exists()


# -- Qdrant Edge: one process at a time, durable across processes ---------------------------


def test_edge_shard_open_elsewhere_gives_a_clear_error(tmp_path: Path) -> None:
    with QdrantEdgeStore(COLLECTION, path=tmp_path) as first:
        first.ensure_collection(SPEC)
        with QdrantEdgeStore(COLLECTION, path=tmp_path) as second:
            with pytest.raises(StoreError, match="another process"):
                second.count()


@pytest.mark.slow
def test_edge_data_survives_a_killed_process(tmp_path: Path) -> None:
    writer = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from backend_contract import SPEC, point
from clip_ingest.connectors.backends import open_store
store = open_store("qdrant", {COLLECTION!r}, path={str(tmp_path)!r})
store.ensure_collection(SPEC)
store.upsert([point(n) for n in range(5)])
store.delete([point(4).id])
os.kill(os.getpid(), signal.SIGKILL)
"""  # killed without flush or close: the write-ahead log must be enough
    done = subprocess.run([sys.executable, "-c", writer], timeout=300)
    assert done.returncode == -signal.SIGKILL
    with open_store("qdrant", COLLECTION, path=str(tmp_path)) as store:
        store.ensure_collection(SPEC)
        assert store.count() == 4
        assert store.retrieve([pid(2)])[0].payload == point(2).payload


# -- qdrant-client against servers: errors and secrets --------------------------------------


def _closed_port() -> int:
    """A local TCP port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def answering_server() -> Iterator[callable]:
    """Start a real HTTP server on localhost that answers every request with a given status."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: dict) -> str:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_refused_connection_is_transient_and_never_shows_the_key(caplog: pytest.LogCaptureFixture, grpc: bool) -> None:
    caplog.set_level("DEBUG")
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    store = QdrantClientStore(COLLECTION, url=url, api_key=SECRET, timeout=2, prefer_grpc=grpc, grpc_port=port)
    try:
        assert SECRET not in repr(store) and "***" in repr(store)
        with pytest.raises(TransientStoreError) as caught:
            store.count()
        assert "127.0.0.1" in str(caught.value)
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
        assert SECRET not in caplog.text
    finally:
        store.close()


@pytest.mark.parametrize("status", [503, 502, 429])
def test_overloaded_server_is_transient(answering_server, status: int) -> None:
    url = answering_server(status, {"status": {"error": "busy"}})
    with QdrantClientStore(COLLECTION, url=url, api_key=SECRET, timeout=2) as store:
        with pytest.raises(TransientStoreError, match=str(status)):
            store.collection_model()


def test_bad_request_is_a_permanent_error_with_the_server_message(answering_server) -> None:
    url = answering_server(400, {"status": {"error": f"Wrong input: bad thing, key {SECRET}"}})
    with QdrantClientStore(COLLECTION, url=url, api_key=SECRET, timeout=2) as store:
        with pytest.raises(StoreError) as caught:
            store.collection_model()
    assert not isinstance(caught.value, TransientStoreError)
    assert "Wrong input: bad thing" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_url_credentials_are_hidden_in_repr() -> None:
    with QdrantClientStore(COLLECTION, url="http://user:pa55word@127.0.0.1:1") as store:
        assert "pa55word" not in repr(store)
