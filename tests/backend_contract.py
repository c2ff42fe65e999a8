"""A reusable contract every :class:`VectorStore` must satisfy, backend-neutral.

Every backend of the registry runs it on an embedded store
(tests/backends/test_backend_contract.py); other ways of reaching a backend (qdrant-client's
local mode, a Milvus server) run it by subclassing in a test module and opening the store in
``make_store``::

    from backend_contract import VectorStoreContract

    class TestMyBackend(VectorStoreContract):
        def make_store(self, tmp_path, collection):
            return MyStore(collection, path=tmp_path / "db")

``make_store`` must return a *new* store over the *same* storage each time it is called with the
same ``tmp_path`` and ``collection`` (the persistence test closes one store and opens another).
A server backend can derive a unique collection name from ``tmp_path`` and drop it afterwards.
Vectors are hand-made unit vectors at known angles, so every score is a known cosine.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from clip_ingest.connectors.backends import (
    CollectionSpec,
    DimensionMismatchError,
    ModelMismatchError,
    Point,
    StoreError,
    VectorStore,
)
from clip_ingest.connectors.filters import parse_filter

DIM = 8
COLLECTION = "contract"
SPEC = CollectionSpec(
    name=COLLECTION,
    dim=DIM,
    model_id="contract-model-a",
    indexed_fields={"colour": "keyword", "index": "integer", "weight": "float", "ok": "bool", "taken": "datetime"},
)
OTHER_MODEL = CollectionSpec(name=COLLECTION, dim=DIM, model_id="contract-model-b")
OTHER_DIM = CollectionSpec(name=COLLECTION, dim=DIM * 2, model_id="contract-model-a")


def pid(n: int) -> str:
    """A deterministic UUID string for test point ``n``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"contract/{n}"))


def at_angle(degrees: float) -> np.ndarray:
    """The unit vector at ``degrees`` from the first axis in the plane of the first two axes."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0], vector[1] = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return vector


def unit(n: int) -> np.ndarray:
    """Basis vector ``n`` (mod DIM)."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[n % DIM] = 1.0
    return vector


def point(n: int, vector: np.ndarray | None = None, **payload: object) -> Point:
    """Point ``n`` with a default payload (colour, index) merged with ``payload``."""
    body = {"colour": ["red", "green", "blue"][n % 3], "index": n, **payload}
    return Point(id=pid(n), vector=unit(n) if vector is None else vector, payload=body)


#: size of the collection in the far-matches filtered-search test (>> a search breadth of 128)
FAR_MATCH_POINTS = 2000

#: how many points match each filter of the far-matches test: 0.1 %, 1 %, 10 %, 50 %
FAR_MATCH_SIZES = (2, 20, 200, FAR_MATCH_POINTS // 2)


def far_match_points() -> list[Point]:
    """FAR_MATCH_POINTS points: ``index < size`` selects the first ``size``; those lie on the far
    side of the query (axis 0), every other point close to it."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(FAR_MATCH_POINTS, DIM)).astype(np.float32) * 0.3
    vectors[:, 0] += 1.0
    vectors[: max(FAR_MATCH_SIZES), 0] -= 2.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Point(id=pid(i), vector=v, payload={"colour": "red", "index": i}) for i, v in enumerate(vectors)]


def load_far_matches(store: VectorStore) -> list[Point]:
    points = far_match_points()
    for start in range(0, len(points), 500):
        store.upsert(points[start:start + 500])
    store.flush()
    if hasattr(store, "wait_until_indexed"):
        store.wait_until_indexed()
    return points


def assert_filtered_pages_are_full(store: VectorStore, points: list[Point] | None = None) -> None:
    """Every page of every far-match filter holds min(k, matches - offset) hits, best first
    (and, given ``points``, exactly the brute-force ranking)."""
    query = unit(0)
    for size in FAR_MATCH_SIZES:
        flt = parse_filter(f"index < {size}")
        for k, offset in ((10, 0), (5, 3), (50, 0)):
            hits = store.search(query, k=k, offset=offset, filter=flt)
            assert len(hits) == min(k, max(0, size - offset)), (size, k, offset, len(hits))
            assert all(h.payload["index"] < size for h in hits)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            if points is not None:
                exact = sorted(points[:size], key=lambda p: -float(p.vector @ query))[offset:offset + k]
                np.testing.assert_allclose(scores, [float(p.vector @ query) for p in exact], atol=1e-4)


#: angles from the query (axis 0) and the cosine each one scores
ANGLES = (0.0, 30.0, 60.0, 90.0, 120.0, 180.0)


class VectorStoreContract:
    """The contract tests; subclass with a ``Test`` name and implement :meth:`make_store`."""

    def make_store(self, tmp_path: Path, collection: str) -> VectorStore:
        """Open the backend under test on ``collection`` (same storage for the same ``tmp_path``)."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[VectorStore]:
        """A store on an existing, empty collection built for SPEC."""
        store = self.make_store(tmp_path, COLLECTION)
        store.ensure_collection(SPEC)
        yield store
        store.close()

    @pytest.fixture
    def angled(self, store: VectorStore) -> VectorStore:
        """``store`` holding one point per angle in ANGLES (point n at ANGLES[n])."""
        store.upsert([point(n, at_angle(a)) for n, a in enumerate(ANGLES)])
        return store

    # -- collection -----------------------------------------------------------------------

    def test_ensure_collection_creates_and_records_the_model(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path, COLLECTION)
        try:
            assert store.collection_model() is None
            store.ensure_collection(SPEC)
            assert store.collection_model() == (SPEC.model_id, SPEC.dim)
            store.ensure_collection(SPEC)  # verifying an existing collection changes nothing
            assert store.count() == 0
        finally:
            store.close()

    def test_unknown_index_type_is_refused_before_creating_anything(self, tmp_path: Path) -> None:
        bad = CollectionSpec(name=COLLECTION, dim=4, model_id="m", indexed_fields={"colour": "colourful"})
        store = self.make_store(tmp_path, COLLECTION)
        try:
            with pytest.raises(ValueError, match="colourful"):
                store.ensure_collection(bad)
            assert store.collection_model() is None
        finally:
            store.close()

    def test_the_model_spec_is_recorded_for_searches_to_default_to(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path, "spec_recorded")
        try:
            assert store.collection_model_spec() is None  # no collection yet
            store.ensure_collection(CollectionSpec("spec_recorded", DIM, "m", model_spec="ViT-B-32:laion2b_s34b_b79k"))
            assert store.collection_model_spec() == "ViT-B-32:laion2b_s34b_b79k"
        finally:
            store.close()

    @pytest.mark.parametrize("other", [OTHER_MODEL, OTHER_DIM], ids=["model", "dim"])
    def test_ensure_collection_refuses_another_model(self, store: VectorStore, other: CollectionSpec) -> None:
        store.upsert([point(1)])
        with pytest.raises(ModelMismatchError) as caught:
            store.ensure_collection(other)
        message = str(caught.value)
        assert SPEC.model_id in message and other.model_id in message and "--recreate" in message
        assert store.collection_model() == (SPEC.model_id, SPEC.dim)
        assert store.count() == 1  # refusing loses nothing

    def test_recreate_drops_and_rebuilds(self, store: VectorStore) -> None:
        store.upsert([point(1), point(2)])
        store.ensure_collection(OTHER_DIM, recreate=True)
        assert store.collection_model() == (OTHER_DIM.model_id, OTHER_DIM.dim)
        assert store.count() == 0
        store.upsert([Point(id=pid(3), vector=np.ones(OTHER_DIM.dim, np.float32), payload={})])
        assert store.count() == 1

    def test_operations_on_a_missing_collection_raise_store_error(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path, COLLECTION)
        try:
            with pytest.raises(StoreError):
                store.count()
            with pytest.raises(StoreError):
                store.upsert([point(1)])
        finally:
            store.close()

    # -- writes ---------------------------------------------------------------------------

    def test_upsert_is_idempotent_by_id(self, store: VectorStore) -> None:
        store.upsert([point(1, colour="red")])
        store.upsert([point(1, colour="blue")])
        assert store.count() == 1
        (only,) = store.retrieve([pid(1)])
        assert only.payload["colour"] == "blue"

    def test_payload_values_round_trip(self, store: VectorStore) -> None:
        payload = {"path": "ünï/cødé 写真.png", "index": 7, "weight": 0.25, "ok": True, "tags": ["a", "b"]}
        store.upsert([Point(id=pid(1), vector=unit(1), payload=payload)])
        (got,) = store.retrieve([pid(1)])
        assert got.payload == payload

    def test_set_payload_replaces_payload_and_keeps_vector(self, store: VectorStore) -> None:
        store.upsert([point(1, at_angle(30), extra="old")])
        store.set_payload(pid(1), {"colour": "yellow"})
        (got,) = store.retrieve([pid(1)], with_vectors=True)
        assert got.payload == {"colour": "yellow"}
        np.testing.assert_allclose(got.vector, at_angle(30), atol=1e-6)

    def test_set_payloads_replaces_each_payload_and_keeps_each_vector(self, store: VectorStore) -> None:
        store.upsert([point(n, at_angle(10 * n), extra="old") for n in range(4)])
        store.set_payloads({pid(0): {"colour": "yellow"}, pid(2): {"colour": "green", "n": 2}})
        got = {p.id: p for p in store.retrieve([pid(n) for n in range(4)], with_vectors=True)}
        assert got[pid(0)].payload == {"colour": "yellow"} and got[pid(2)].payload == {"colour": "green", "n": 2}
        assert got[pid(1)].payload["extra"] == got[pid(3)].payload["extra"] == "old"
        for n in range(4):
            np.testing.assert_allclose(got[pid(n)].vector, at_angle(10 * n), atol=1e-6)
        assert store.count() == 4

    def test_set_payloads_naming_a_missing_point_raises_and_writes_nothing(self, store: VectorStore) -> None:
        store.upsert([point(1, colour="red")])
        with pytest.raises(StoreError, match="no point with id"):
            store.set_payloads({pid(1): {"colour": "blue"}, pid(99): {"colour": "red"}})
        (only,) = store.retrieve([pid(1)])
        assert only.payload["colour"] == "red" and store.count() == 1

    def test_delete_removes_points_and_ignores_unknown_ids(self, store: VectorStore) -> None:
        store.upsert([point(n) for n in range(5)])
        store.delete([pid(1), pid(3), pid(99)])
        assert store.count() == 3
        assert store.retrieve([pid(1), pid(3)]) == []
        assert {p.id for p in store.scroll()} == {pid(0), pid(2), pid(4)}

    def test_wrong_dimension_is_rejected_and_nothing_written(self, store: VectorStore) -> None:
        good, bad = point(1), Point(id=pid(2), vector=np.ones(DIM + 1, np.float32), payload={})
        with pytest.raises(DimensionMismatchError):
            store.upsert([good, bad])
        assert store.count() == 0
        with pytest.raises(DimensionMismatchError):
            store.search(np.ones(DIM - 1, np.float32))

    def test_non_uuid_id_is_rejected(self, store: VectorStore) -> None:
        with pytest.raises(StoreError):
            store.upsert([Point(id="not-a-uuid", vector=unit(1), payload={})])
        assert store.count() == 0

    # -- reads ----------------------------------------------------------------------------

    def test_retrieve_returns_existing_points_only(self, store: VectorStore) -> None:
        store.upsert([point(n) for n in range(4)])
        got = {p.id: p for p in store.retrieve([pid(0), pid(2), pid(99)])}
        assert set(got) == {pid(0), pid(2)}
        assert got[pid(2)].payload == {"colour": "blue", "index": 2}
        assert got[pid(2)].vector is None
        (with_vector,) = store.retrieve([pid(3)], with_vectors=True)
        np.testing.assert_allclose(with_vector.vector, unit(3), atol=1e-6)
        assert store.retrieve([]) == []

    def test_scroll_returns_everything_with_field_projection(self, store: VectorStore) -> None:
        store.upsert([point(n, weight=n / 2) for n in range(23)])
        everything = list(store.scroll(batch_size=5))
        assert sorted(p.id for p in everything) == sorted(pid(n) for n in range(23))
        assert all(set(p.payload) == {"colour", "index", "weight"} for p in everything)
        projected = list(store.scroll(fields=["index"], batch_size=7))
        assert {p.id: p.payload for p in projected} == {pid(n): {"index": n} for n in range(23)}

    def test_search_orders_by_cosine(self, angled: VectorStore) -> None:
        hits = angled.search(unit(0), k=len(ANGLES))
        assert [h.id for h in hits] == [pid(n) for n in range(len(ANGLES))]
        expected = [math.cos(math.radians(a)) for a in ANGLES]
        np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
        assert hits[1].payload == {"colour": "green", "index": 1}

    def test_search_k_and_offset_page_through_results(self, angled: VectorStore) -> None:
        full = angled.search(unit(0), k=len(ANGLES))
        assert [h.id for h in angled.search(unit(0), k=2)] == [h.id for h in full[:2]]
        assert [h.id for h in angled.search(unit(0), k=2, offset=2)] == [h.id for h in full[2:4]]

    def test_search_score_threshold(self, angled: VectorStore) -> None:
        hits = angled.search(unit(0), k=10, score_threshold=0.4)
        assert [h.id for h in hits] == [pid(0), pid(1), pid(2)]  # cos 60 deg = 0.5 passes, 90 deg does not
        assert all(h.score >= 0.4 for h in hits)

    def test_count_counts_exactly(self, store: VectorStore) -> None:
        assert store.count() == 0
        store.upsert([point(n) for n in range(11)])
        assert store.count() == 11

    def test_filter_restricts_search_and_count(self, store: VectorStore) -> None:
        store.upsert([point(n, at_angle(10 * n)) for n in range(9)])  # colours cycle red, green, blue
        red_from_3 = parse_filter('colour = "red" and index >= 3')
        assert store.count(filter=red_from_3) == 2
        hits = store.search(unit(0), k=10, filter=red_from_3)
        assert [h.id for h in hits] == [pid(3), pid(6)]  # closest first: 30 deg before 60 deg
        assert all(h.payload["colour"] == "red" for h in hits)
        assert store.count(filter=parse_filter('not colour = "red"')) == 6

    def test_date_ranges_on_a_datetime_index_match_the_stored_unix_seconds(self, store: VectorStore) -> None:
        """SPEC indexes ``taken`` as ``datetime``; dates are stored as Unix seconds (as ingest's
        ``taken_at``), so a date range must give what comparing the numbers gives."""
        start = 1_559_347_200.0  # 2019-06-01T00:00:00Z
        taken = [start + day * 86_400 + 0.25 for day in range(-3, 7)]
        store.upsert([point(n, at_angle(10 * n), taken=t) for n, t in enumerate(taken)])
        ranges = {  # filter -> the points whose number lies in it (point n was taken on day n - 3)
            "taken >= 2019-06-01 and taken < 2019-06-06": range(3, 8),
            "taken < 2019-06-01": range(0, 3),
            "taken > 2019-06-06T00:00:00.25Z": range(9, 10),
            "taken >= 1559347200 and taken <= 2019-06-02T00:00:00.25Z": range(3, 5),
        }
        for text, expected in ranges.items():
            flt = parse_filter(text)
            assert store.count(filter=flt) == len(expected), text
            hits = store.search(unit(0), k=20, filter=flt)
            assert sorted(h.id for h in hits) == sorted(pid(n) for n in expected), text

    def test_filtered_search_returns_min_k_matches_however_far_and_rare_the_matches(self, store: VectorStore) -> None:
        """A collection much larger than the search breadth (ef 128): matching points sit far
        from the query, behind many closer non-matching ones. Post-filtering a candidate list
        would return fewer hits than exist; every backend must return exactly min(k, matches)."""
        load_far_matches(store)
        assert_filtered_pages_are_full(store)

    # -- durability -----------------------------------------------------------------------

    def test_data_persists_after_close_and_reopen(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path, COLLECTION)
        store.ensure_collection(SPEC)
        store.upsert([point(n, at_angle(a)) for n, a in enumerate(ANGLES)])
        store.set_payload(pid(0), {"colour": "yellow"})
        store.delete([pid(5)])
        store.flush()
        store.close()

        reopened = self.make_store(tmp_path, COLLECTION)
        try:
            assert reopened.collection_model() == (SPEC.model_id, SPEC.dim)
            reopened.ensure_collection(SPEC)
            assert reopened.count() == len(ANGLES) - 1
            assert reopened.retrieve([pid(0)])[0].payload == {"colour": "yellow"}
            assert [h.id for h in reopened.search(unit(0), k=2)] == [pid(0), pid(1)]
        finally:
            reopened.close()
