"""Milvus connector: the shared contract on Milvus Lite and on a real Milvus 2.3.5 server, plus
Milvus specifics (byte-split writes, filters, secrets, outages, deployment capabilities)."""

from __future__ import annotations

import hashlib
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from backend_contract import (
    COLLECTION,
    DIM,
    SPEC,
    VectorStoreContract,
    assert_filtered_pages_are_full,
    at_angle,
    load_far_matches,
    pid,
    point,
    unit,
)
from click.testing import CliRunner
from milvus_server import MilvusServer
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from clip_ingest.connectors.backends import (
    CollectionSpec,
    Point,
    StoreError,
    TransientStoreError,
    VectorStore,
)
from clip_ingest.connectors.backends.milvus.store import (
    Capabilities,
    LiteLockedNoise,
    LiteTimestampNoise,
    MilvusStore,
    is_transient,
    row_bytes,
    split_by_bytes,
)
from clip_ingest.connectors.filters import parse_filter

SECRET = "root:sekrit-milvus-token-0123456789"


def server_collection(tmp_path: Path, collection: str) -> str:
    """A collection name unique to one test (the server is shared by the whole session)."""
    return f"{collection}_{hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]}"


def drop(uri: str, name: str) -> None:
    client = MilvusClient(uri=uri, timeout=10)
    try:
        if client.has_collection(name, timeout=10):
            client.drop_collection(name, timeout=10)
    finally:
        client.close()


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the contract --------------------------------------------------------------------------


@pytest.mark.milvus_server
class TestMilvusServerContract(VectorStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, milvus_server: MilvusServer, tmp_path: Path) -> Iterator[None]:
        self.uri = milvus_server.uri
        yield
        drop(self.uri, server_collection(tmp_path, COLLECTION))

    def make_store(self, tmp_path: Path, collection: str) -> VectorStore:
        return MilvusStore(server_collection(tmp_path, collection), uri=self.uri, timeout=20)


def test_a_post_filtering_index_cannot_make_a_filtered_page_short(tmp_path: Path, monkeypatch) -> None:
    """Failure injection beside the real contract test: the real Milvus Lite store, with its ANN
    search made to behave as Milvus does on large collections (the top ``ef`` candidates are
    collected, then filtered). Pages must still be full and exactly ranked: the store notices a
    short page against the count, widens ``ef``, then ranks the matches itself."""
    store = MilvusStore(COLLECTION, uri=str(tmp_path / "milvus.db"))
    store.ensure_collection(SPEC)
    points = load_far_matches(store)
    real = store._ann_search
    widths: list[int] = []

    def post_filtered(query, expr, params, k, offset, ef):
        widths.append(ef)
        candidates = {h.id for h in real(query, "", {}, ef, 0, ef)}
        matching = real(query, expr, params, min(ef, 16384 - offset), 0, ef)
        return [h for h in matching if h.id in candidates][offset:offset + k]

    monkeypatch.setattr(store, "_ann_search", post_filtered)
    # small filters go straight to the exact ranking; the two largest (200, 1000 matches) try a wider ef first
    monkeypatch.setattr("clip_ingest.connectors.backends.milvus.store.EXACT_SEARCH_MAX_MATCHES", 100)
    # filtered searches start at the server's ef, as on a Lite collection past LITE_FILTERED_EF points
    monkeypatch.setattr("clip_ingest.connectors.backends.milvus.store.LITE_FILTERED_EF", 128)
    assert_filtered_pages_are_full(store, points)
    assert max(widths) > 128
    store.close()


# -- deployments: one store per deployment for the Milvus-specific tests --------------------


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def deployment_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URI of Milvus Lite (a fresh file) or of the session's real server."""
    if request.param == "lite":
        yield str(tmp_path / "milvus.db")
        return
    server: MilvusServer = request.getfixturevalue("milvus_server")
    yield server.uri
    drop(server.uri, server_collection(tmp_path, "specific"))


@pytest.fixture
def milvus(deployment_uri: str, tmp_path: Path) -> Iterator[MilvusStore]:
    """An empty collection built for SPEC on each deployment."""
    store = MilvusStore(server_collection(tmp_path, "specific"), uri=deployment_uri, timeout=20)
    store.ensure_collection(SPEC)
    yield store
    store.close()


@pytest.fixture
def lite(milvus_lite_uri: str) -> Iterator[MilvusStore]:
    """An empty Milvus Lite collection built for SPEC (for checks made before any request)."""
    store = MilvusStore(COLLECTION, uri=milvus_lite_uri)
    store.ensure_collection(SPEC)
    yield store
    store.close()


class CountingClient:
    """Delegates to a real MilvusClient and records the rows of every upsert request."""

    def __init__(self, client: MilvusClient) -> None:
        self._client = client
        self.upserts: list[list[dict[str, Any]]] = []

    def upsert(self, collection_name: str, data: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.upserts.append(list(data))
        return self._client.upsert(collection_name, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- writes --------------------------------------------------------------------------------


def test_wait_until_indexed_after_a_flush(milvus: MilvusStore) -> None:
    milvus.upsert([point(i) for i in range(20)])
    milvus.flush()
    assert milvus.wait_until_indexed(timeout=120)
    assert milvus.count() == 20


def test_scrolling_milvus_lite_logs_no_error(lite: MilvusStore, caplog: pytest.LogCaptureFixture) -> None:
    """Milvus Lite's server lacks AllocTimestamp; the scroll works and must not log a traceback."""
    lite.upsert([point(i) for i in range(3)])
    lite.flush()
    with caplog.at_level(logging.DEBUG):
        assert len(list(lite.scroll())) == 3
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


def test_lite_noise_filter_drops_only_the_alloc_timestamp_records() -> None:
    def record_from(raiser) -> logging.LogRecord:
        try:
            raiser()
        except NotImplementedError:
            import sys

            return logging.LogRecord("grpc._server", logging.ERROR, __file__, 1, "Exception calling application", None, sys.exc_info())
        raise AssertionError("did not raise")

    def AllocTimestamp() -> None:  # noqa: N802  (the name of the unimplemented gRPC method)
        raise NotImplementedError("Method not implemented!")

    def Search() -> None:  # noqa: N802
        raise NotImplementedError("Method not implemented!")

    noise = LiteTimestampNoise()
    assert not noise.filter(record_from(AllocTimestamp))
    assert noise.filter(record_from(Search))  # any other unimplemented method is still logged
    warning = logging.LogRecord("x", logging.WARNING, __file__, 1, "failed to get mvccTs from milvus server, use client-side ts instead", None, None)
    other = logging.LogRecord("x", logging.WARNING, __file__, 1, "something else", None, None)
    assert not noise.filter(warning) and noise.filter(other)


def test_split_by_bytes_keeps_order_and_limit() -> None:
    rows = [{"id": pid(n), "vector": [0.0] * DIM, "blob": "x" * (n * 10)} for n in range(40)]
    limit = 2048
    groups = list(split_by_bytes(rows, limit))
    assert [row for group in groups for row in group] == rows
    assert len(groups) > 1
    assert all(sum(row_bytes(row) for row in group) <= limit for group in groups)


def test_a_row_over_the_request_limit_is_refused() -> None:
    rows = [{"id": pid(1), "vector": [0.0] * DIM, "blob": "x" * 5000}]
    with pytest.raises(StoreError, match="request limit"):
        list(split_by_bytes(rows, 4096))


def test_large_upsert_is_split_into_requests_by_bytes(milvus: MilvusStore) -> None:
    small = MilvusStore(milvus.collection, uri=milvus.uri, timeout=20, max_request_bytes=4096)
    try:
        small.ensure_collection(SPEC)
        counting = CountingClient(small._conn())
        small._client = counting  # type: ignore[assignment]  (a recording wrapper around the real client)
        points = [point(n, note="n" * 150) for n in range(60)]
        small.upsert(points)
        assert len(counting.upserts) >= 3
        assert all(sum(row_bytes(row) for row in request) <= 4096 for request in counting.upserts)
        assert small.count() == 60
        assert {p.id for p in small.scroll(fields=[])} == {p.id for p in points}
    finally:
        small.close()


def test_reserved_or_unserialisable_payload_is_refused_and_nothing_written(lite: MilvusStore) -> None:
    for payload in ({"id": "x"}, {"vector": 1}, {"$meta": 1}, {"when": object()}, {"w": float("nan")}):
        with pytest.raises(StoreError):
            lite.upsert([point(1), Point(id=pid(2), vector=unit(2), payload=payload)])
    assert lite.count() == 0


def test_upsert_replaces_the_whole_payload(milvus: MilvusStore) -> None:
    milvus.upsert([point(1, extra="old", tags=["a"])])
    milvus.upsert([Point(id=pid(1), vector=unit(1), payload={"colour": "blue"})])
    assert milvus.retrieve([pid(1)])[0].payload == {"colour": "blue"}


def test_uppercase_uuid_ids_are_stored_canonically(lite: MilvusStore) -> None:
    lite.upsert([Point(id=pid(1).upper(), vector=unit(1), payload={})])
    assert [p.id for p in lite.retrieve([pid(1).upper()])] == [pid(1)]
    lite.delete([pid(1).upper()])
    assert lite.count() == 0


def test_milvus_lite_answers_after_a_long_idle_spell(milvus_lite_uri: str) -> None:
    """A process that opens a Lite file again after a long idle spell on it (migrate, the ingest
    driver around a long Ray run). With pymilvus' default 10 s keepalive pings, Milvus Lite closed
    the idle connection after about 40 s (GOAWAY "too_many_pings") and the next connect to the
    file failed (4 tries of 4 at 45-60 s idle)."""
    with MilvusStore(COLLECTION, uri=milvus_lite_uri) as store:
        store.ensure_collection(SPEC)
        store.upsert([point(i) for i in range(5)])
        assert store.count() == 5
        time.sleep(45)
        with MilvusStore(COLLECTION, uri=milvus_lite_uri) as again:
            assert again.count() == 5
        assert store.count() == 5


# -- filters -------------------------------------------------------------------------------


#: filter text -> the point numbers it selects from FILTER_POINTS
FILTER_CASES = {
    'colour = "red"': {0, 3, 6},
    "index >= 5 and index < 7": {5, 6},
    'colour in ["green", "blue"] and not index = 1': {2, 4, 5, 7},
    'not camera = "x"': set(range(8)) - {2},
    "exists camera": {2},
    'tags = "b"': {1},
    'colour startswith "gr"': {1, 4, 7},
    'colour = "it\'s \\"quoted\\""': set(),
}


def test_filters_in_search_and_count(milvus: MilvusStore) -> None:
    milvus.upsert([point(n) for n in range(8) if n not in (1, 2)] + [point(1, tags=["a", "b"]), point(2, camera="x")])
    for text, expected in FILTER_CASES.items():
        parsed = parse_filter(text)
        assert milvus.count(filter=parsed) == len(expected), text
        assert {h.id for h in milvus.search(unit(0), k=8, filter=parsed)} == {pid(n) for n in expected}, text


# -- collection metadata and options --------------------------------------------------------


def test_foreign_collection_is_refused(milvus_lite_uri: str) -> None:
    name = "foreign"
    client = MilvusClient(uri=milvus_lite_uri, timeout=20)
    try:
        client.create_collection(name, dimension=DIM, id_type="string", max_length=64, timeout=20)
    finally:
        client.close()
    with MilvusStore(name, uri=milvus_lite_uri, timeout=20) as store:
        assert store.collection_model() == ("<unrecorded>", DIM)
        with pytest.raises(StoreError, match="--recreate"):
            store.ensure_collection(CollectionSpec(name=name, dim=DIM, model_id="m"))


@pytest.mark.parametrize(
    "options", [{"index_type": "IVF_PQ"}, {"search_consistency": "Sometimes"}, {"max_request_bytes": 100 * 2**20}]
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MilvusStore("c", **options)


def test_capabilities_by_version() -> None:
    assert Capabilities.from_version("v2.3.5") == Capabilities("v2.3.5", False, False, False, list_aliases=False)
    assert Capabilities.from_version("v2.5.3") == Capabilities("v2.5.3", False, True, False)
    assert Capabilities.from_version("2.6.1") == Capabilities("2.6.1", False, True, True)
    assert Capabilities.from_version("milvus_lite-3.2.2") == Capabilities("milvus_lite-3.2.2", True, False, False, typed_columns=True)


def test_deployment_capabilities_are_detected(milvus: MilvusStore) -> None:
    caps = milvus.capabilities
    assert caps.lite == milvus.is_lite
    assert not caps.filter_params  # neither Milvus Lite nor 2.3.5 has expression templates


# -- Milvus Lite files: never created by a read, one clear line when another process holds one

#: a process holding a Milvus Lite file open until its stdin closes (as a running ingest does)
HOLDER = """
import sys
from clip_ingest.connectors.backends.milvus.store import MilvusStore
from backend_contract import SPEC
store = MilvusStore(SPEC.name, uri=sys.argv[1])
store.ensure_collection(SPEC)
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


def test_reads_of_a_missing_lite_file_create_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "clip-ingest-data"
    store = MilvusStore(COLLECTION, uri=str(data_dir / "milvus.db"))
    assert store.collection_model() is None and store.collection_model_spec() is None
    assert store.alias_target() is None and store.aliases() == {} and store.collections() == []
    for read in (lambda: store.search(unit(0), k=3), store.count, lambda: store.retrieve([pid(0)]),
                 lambda: list(store.scroll())):
        with pytest.raises(StoreError, match="no collection at .*milvus.db.*ingest first with clip-ingest --target milvus"):
            read()
    store.close()
    assert not data_dir.exists()


def test_clip_search_on_a_missing_lite_file_exits_1_and_creates_nothing(tmp_path: Path, monkeypatch) -> None:
    from clip_ingest.connectors.cli.search import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--target", "milvus", "--model", "clip-ingest-tiny:random", "--device", "cpu",
                                       "--text", "x"])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "does not exist" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def held_lite_file(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A Milvus Lite file with a collection, held open by another (real) process."""
    path = tmp_path / "clip-ingest-data" / "milvus.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              cwd=Path(__file__).parents[1], text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield path, holder
    finally:
        holder.communicate(timeout=60)  # closes its stdin: it releases the file and exits


def test_a_lite_file_held_by_another_process_is_one_error_naming_it(held_lite_file) -> None:
    path, holder = held_lite_file
    store = MilvusStore(COLLECTION, uri=str(path))
    with pytest.raises(StoreError, match=f"the Milvus Lite file .*milvus.db is in use by process {holder.pid} .*clip-search serve"):
        store.collection_model()


def test_clip_search_on_a_held_lite_file_prints_one_line_and_exits_1(held_lite_file, tmp_path: Path) -> None:
    path, holder = held_lite_file
    done = subprocess.run(
        [str(Path(sys.executable).parent / "clip-search"), "--target", "milvus", "--milvus-uri", str(path),
         "--collection", COLLECTION, "--text", "x"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: the Milvus Lite file {path} is in use by process {holder.pid}")
    assert "clip-search serve" in lines[0] and "wait for the ingest to finish" in lines[0]


def test_lite_locked_noise_filter_drops_only_the_held_file_traceback() -> None:
    class DataDirLockedError(Exception):  # the name Milvus Lite gives it
        pass

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("milvus_lite.server_manager", logging.ERROR, __file__, 1, "Failed", (), info)

    noise = LiteLockedNoise()
    assert not noise.filter(record(DataDirLockedError("held")))
    assert noise.filter(record(OSError("disk full"))) and noise.filter(record(None))


# -- errors and secrets ---------------------------------------------------------------------


def test_transient_classification() -> None:
    assert is_transient(MilvusException(grpc.StatusCode.UNAVAILABLE, "down"))
    assert is_transient(MilvusException(grpc.StatusCode.DEADLINE_EXCEEDED, "slow"))
    assert is_transient(MilvusException(2, "Fail connecting to server"))
    assert is_transient(MilvusException(101, "failed to query: collection not loaded"))
    assert not is_transient(MilvusException(1100, "invalid parameter"))
    assert not is_transient(ValueError("bad"))


def test_unreachable_server_is_transient_and_secret_free(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = MilvusStore("c", uri=f"http://127.0.0.1:{closed_port()}", token=SECRET, timeout=1)
    assert SECRET not in repr(store) and "***" in repr(store)
    with pytest.raises(TransientStoreError) as caught:
        store.count()
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None and error not in chain:  # pymilvus raises `e from e`: the chain can loop
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all(SECRET not in str(e) and SECRET not in repr(e) for e in chain)
    assert SECRET not in caplog.text
    store.close()


def test_credentials_in_the_uri_are_redacted() -> None:
    store = MilvusStore("c", uri="https://root:pa55word@milvus.example:19530")
    assert "pa55word" not in repr(store) and "milvus.example" in repr(store)


@pytest.mark.milvus_server
def test_token_is_used_but_never_shown(
    milvus_server: MilvusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = server_collection(tmp_path, "specific")
    try:
        with MilvusStore(name, uri=milvus_server.uri, token=SECRET, timeout=20) as store:
            store.ensure_collection(SPEC)  # the test server has authorization off: the token is accepted
            store.upsert([point(1)])
            with pytest.raises(StoreError) as caught:
                store.search(unit(0), filter=parse_filter("index >= 1"), offset=20000)  # beyond Milvus' window
            assert SECRET not in str(caught.value) and SECRET not in repr(store)
        assert SECRET not in caplog.text
    finally:
        drop(milvus_server.uri, name)


@pytest.mark.milvus_server
def test_a_collection_not_loaded_is_transient_and_loaded_by_the_retry(milvus_server: MilvusServer, tmp_path: Path) -> None:
    """What a restarted server answers until it has reloaded a collection (released here to provoke it)."""
    name = server_collection(tmp_path, "unloaded")
    try:
        with MilvusStore(name, uri=milvus_server.uri, timeout=20) as store:
            store.ensure_collection(SPEC)
            store.upsert([point(n) for n in range(3)])
            MilvusClient(uri=milvus_server.uri).release_collection(name)
            with pytest.raises(TransientStoreError, match="not loaded"):
                store.retrieve([pid(0)])
            assert {p.id for p in store.retrieve([pid(n) for n in range(3)])} == {pid(n) for n in range(3)}
    finally:
        drop(milvus_server.uri, name)



def test_filters_follow_a_key_that_changes_shape(deployment_uri: str, tmp_path: Path) -> None:
    """Typed columns and comparisons without ``json_contains_any`` are shortcuts: once a key holds
    a list, a value of another type, or goes missing, every store (one that learnt the keys before
    the change included) still matches exactly what the payloads say."""
    name = server_collection(tmp_path, "shapes")
    spec = CollectionSpec(name=name, dim=DIM, model_id="m", indexed_fields={"tags": "keyword", "n": "integer"})
    writer = MilvusStore(name, uri=deployment_uri, timeout=20)
    writer.ensure_collection(spec)
    reader = MilvusStore(name, uri=deployment_uri, timeout=20)
    one, two, three = pid(1), pid(2), pid(3)
    query = at_angle(0)

    def ids(store: MilvusStore, text: str) -> set[str]:
        return {hit.id for hit in store.search(query, k=10, filter=parse_filter(text))}

    try:
        writer.upsert([Point(one, at_angle(10), {"tags": "a", "n": 1}), Point(two, at_angle(20), {"tags": "b", "n": 2})])
        assert ids(reader, 'tags = "a"') == {one}
        expr = reader._expression(parse_filter('tags = "a"'))[0]
        assert "json_contains_any" not in expr  # no key held a list yet
        assert ("__clip_tags" in expr) == reader.capabilities.typed_columns
        writer.upsert([Point(three, at_angle(30), {"tags": ["a", "c"], "n": 2.5}), Point(one, at_angle(10), {"n": "one"})])
        for store in (writer, reader):
            assert ids(store, 'tags = "a"') == {three}
            assert ids(store, 'tags in ["c", "b"]') == {two, three}
            assert ids(store, "exists tags") == {two, three}
            assert ids(store, "n >= 2") == {two, three}
            assert ids(store, 'n = "one"') == {one}
            assert store.count(parse_filter('tags = "c"')) == 1
        assert reader.retrieve([one])[0].payload == {"n": "one"}  # columns never show in a payload
        with pytest.raises(StoreError, match="__clip_"):  # a payload key cannot write a column
            writer.upsert([Point(two, at_angle(20), {"__clip_tags": "a"})])
        assert ids(writer, 'tags = "b"') == {two}
    finally:
        reader.close()
        writer.close()
        drop(deployment_uri, name)


def test_a_collection_made_before_list_keys_were_recorded_gets_its_record(deployment_uri: str, tmp_path: Path) -> None:
    """An older collection (made as before, without the record) is filtered as if any key held a
    list; the next ensure_collection records the keys that do, from one scan, and filters stay exact."""
    name = server_collection(tmp_path, "older")
    client = MilvusClient(uri=deployment_uri, timeout=20)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong",
                             properties={"clip_ingest.model_id": SPEC.model_id, "clip_ingest.dim": str(DIM)})
    client.close()
    store = MilvusStore(name, uri=deployment_uri, timeout=20)
    try:
        store.upsert([point(1, tags=["a", "b"], colour="red"), point(2, tags="a", colour="blue")])
        assert store._key_layout().lists is None
        assert "json_contains_any" in store._expression(parse_filter('colour = "red"'))[0]
        store.ensure_collection(CollectionSpec(name=name, dim=DIM, model_id=SPEC.model_id))
        assert store._key_layout().lists == {"tags"}
        assert "json_contains_any" not in store._expression(parse_filter('colour = "red"'))[0]
        query = unit(0)
        assert {h.id for h in store.search(query, k=5, filter=parse_filter('tags = "b"'))} == {pid(1)}
        assert {h.id for h in store.search(query, k=5, filter=parse_filter('tags = "a"'))} == {pid(1), pid(2)}
    finally:
        store.close()
        drop(deployment_uri, name)


def test_a_searcher_follows_an_alias_to_a_collection_with_other_columns(milvus_lite_uri: str) -> None:
    """The key layout is read per search, not per store: after ``migrate`` points the alias at a
    collection without the typed column (where the key holds lists), a long-lived searcher still
    filters exactly."""
    old, new = "photos_v1", "photos_v2"
    writer = MilvusStore("photos", uri=milvus_lite_uri, timeout=20)
    writer.ensure_collection(CollectionSpec(name="photos", dim=DIM, model_id="m", indexed_fields={"label": "keyword"}))
    writer.upsert([Point(pid(1), at_angle(10), {"label": "a"})])
    writer.adopt(old)
    searcher = MilvusStore("photos", uri=milvus_lite_uri, timeout=20)
    query = at_angle(0)

    def ids(text: str) -> set[str]:
        return {hit.id for hit in searcher.search(query, k=5, filter=parse_filter(text))}

    try:
        assert ids('label = "a"') == {pid(1)}
        successor = MilvusStore(new, uri=milvus_lite_uri, timeout=20)
        successor.ensure_collection(CollectionSpec(name=new, dim=DIM, model_id="m"))
        successor.upsert([Point(pid(2), at_angle(20), {"label": ["a", "b"]})])
        writer.switch_alias("photos", new)
        assert ids('label = "b"') == {pid(2)}
        assert ids('label = "a"') == {pid(2)}
        successor.close()
    finally:
        searcher.close()
        writer.close()
