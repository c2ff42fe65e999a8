"""What both Qdrant stores (qdrant-client and Qdrant Edge) share; imports neither client.

:class:`QdrantStore` holds their common flow (verify or create a collection, check points before
writing, page through a scroll, turn records into points and hits); each store supplies the few
calls its client spells differently. Opening a Qdrant Edge store must not load qdrant-client
(about a second of imports, see benchmarks/cli_latency.py), so the shared pieces live here
rather than in either store.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..base import (
    CollectionSpec,
    Hit,
    InvalidSettingError,
    Point,
    StoreError,
    VectorStore,
    check_collection_model,
    check_point_id,
    check_vector,
    refuse_recreate_through_alias,
)
from ..common import GEO_KEYS

#: format of the model record stored with a Qdrant collection
METADATA_FORMAT = 1

#: CollectionSpec.indexed_fields type -> Qdrant payload index type (qdrant-client's
#: ``PayloadSchemaType`` values; Qdrant Edge spells the same names capitalised). ``datetime`` is
#: the float index: dates are stored as Unix seconds and a date literal compiles to a numeric
#: range (:class:`clip_ingest.connectors.filters.Instant`); Qdrant's own datetime index holds
#: RFC 3339 strings, so a numeric range on it matches nothing.
INDEX_TYPES: dict[str, str] = {
    "keyword": "keyword", "integer": "integer", "float": "float", "bool": "bool", "datetime": "float", "geo": "geo",
}


def metadata_record(spec: CollectionSpec) -> dict[str, Any]:
    """The model record stored with a Qdrant collection (by both Qdrant stores)."""
    record: dict[str, Any] = {"model_id": spec.model_id, "dim": spec.dim, "format": METADATA_FORMAT}
    if spec.model_spec:
        record["model_spec"] = spec.model_spec
    return record


def payload_indexes(spec: CollectionSpec) -> list[tuple[str, str]]:
    """``(payload key, Qdrant index type)`` of every payload index ``spec`` asks for: a ``geo`` field
    gets the geo index (radius filters) and float indexes on ``FIELD.lat`` and ``FIELD.lon`` (box
    filters; see :mod:`.compile`)."""
    indexes: list[tuple[str, str]] = []
    for name, kind in spec.indexed_fields.items():
        indexes.append((name, INDEX_TYPES[kind]))
        if kind == "geo":
            indexes.extend((f"{name}.{key}", INDEX_TYPES["float"]) for key in GEO_KEYS)
    return indexes


def check_index_types(spec: CollectionSpec) -> None:
    """Raise ``ValueError`` for an ``indexed_fields`` type no Qdrant index exists for (before any change)."""
    unknown = {name: kind for name, kind in spec.indexed_fields.items() if kind not in INDEX_TYPES}
    if unknown:
        raise InvalidSettingError(f"unknown payload index types {unknown}; choose from {', '.join(INDEX_TYPES)}")


def payload_selector(fields: Sequence[str] | None) -> bool | list[str]:
    """``with_payload`` for a field projection: all (None), none (empty) or just these fields."""
    if fields is None:
        return True
    return list(fields) or False


def record_to_point(record: Any) -> Point:
    """A qdrant-client or Qdrant Edge record as our Point (id as a string, vector as float32 when fetched).

    ``record`` has ``id``, ``vector`` (a list when fetched) and ``payload``.
    """
    vector = record.vector
    array = np.asarray(vector, dtype=np.float32) if isinstance(vector, list) else None
    return Point(id=str(record.id), vector=array, payload=dict(record.payload or {}))


def scored_to_hit(scored: Any) -> Hit:
    """A qdrant-client or Qdrant Edge scored point (``id``, ``score``, ``payload``) as our Hit."""
    return Hit(id=str(scored.id), score=float(scored.score), payload=dict(scored.payload or {}))


#: a page of a scroll: ``(records, next offset or None)`` for an offset
Pager = Callable[[Any], "tuple[Sequence[Any], Any]"]


class QdrantStore(VectorStore):
    """The flow both Qdrant stores share; a store implements the hooks below (each one call of its client).

    ``_where`` names the storage in messages; ``_dim`` caches the collection's dimension.
    """

    _where: str = ""
    _dim: int | None = None
    #: filter AST -> the client's filter object
    _compile: Callable[[Any], Any]

    # -- hooks ----------------------------------------------------------------------------

    def _error(self, action: str, exc: Exception) -> StoreError:
        """The :class:`~..base.StoreError` (or transient one) that ``exc``, raised by the client during ``action``, becomes."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Make the storage writable before a collection is created (default: nothing to do)."""

    def _follow(self) -> None:
        """Notice an alias switch before a request (default: the database follows aliases itself)."""

    def _create(self, spec: CollectionSpec, *, drop: bool) -> None:
        """Create the collection with its model record (dropping the old one first when ``drop``)."""
        raise NotImplementedError

    def _build(self, spec: CollectionSpec) -> None:
        """Create what the verified collection still lacks (payload indexes)."""
        raise NotImplementedError

    def _write(self, rows: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        """Upsert checked ``(id, vector, payload)`` rows."""
        raise NotImplementedError

    def _fetch(self, ids: list[str], with_vectors: bool) -> Sequence[Any]:
        """The records with these canonical ids (inside :meth:`_translated`)."""
        raise NotImplementedError

    def _pager(self, with_payload: bool | list[str], batch_size: int) -> Pager:
        """A function returning one page of a scroll for an offset (called inside :meth:`_translated`)."""
        raise NotImplementedError

    def _remove(self, ids: list[str]) -> None:
        """Delete points by canonical id."""
        raise NotImplementedError

    def _query(self, query: list[float], k: int, offset: int, native: Any, score_threshold: float | None) -> Sequence[Any]:
        """Scored points nearest to ``query`` matching the compiled filter (inside :meth:`_translated`)."""
        raise NotImplementedError

    def _count(self, native: Any) -> int:
        """The exact number of points matching the compiled filter (inside :meth:`_translated`)."""
        raise NotImplementedError

    # -- the shared flow ------------------------------------------------------------------

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Run client calls, turning their exceptions into :meth:`_error`'s (our own pass unchanged)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(action, exc) from None

    def ensure_collection(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        check_index_types(spec)
        self._prepare()
        stored = self.collection_model()
        if stored is not None and not recreate:
            check_collection_model(self.collection, spec, stored)
        else:
            if stored is not None:
                refuse_recreate_through_alias(self)
            self._create(spec, drop=stored is not None)
        self._dim = spec.dim
        self._build(spec)

    def _collection_dim(self) -> int:
        """The collection's dimension (cached), or StoreError if the collection does not exist."""
        self._follow()
        if self._dim is None:
            stored = self.collection_model()
            if stored is None:
                raise StoreError(f"collection {self.collection!r} does not exist at {self._where}; ingest first")
            self._dim = stored[1]
        return self._dim

    def _native(self, filter: Any | None) -> Any:
        return None if filter is None else self._compile(filter)

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        dim = self._collection_dim()
        rows = []
        for point in points:
            if point.vector is None:
                raise StoreError(f"point {point.id!r} has no vector; upsert needs one")
            rows.append((check_point_id(point.id), check_vector(point.vector, dim).tolist(), dict(point.payload)))
        self._write(rows)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        if not ids:
            return []
        wanted = [check_point_id(i) for i in ids]
        with self._translated("retrieve"):
            records = self._fetch(wanted, with_vectors)
        return [record_to_point(record) for record in records]

    def scroll(self, fields: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[Point]:
        page = self._pager(payload_selector(fields), batch_size)
        offset = None
        while True:
            with self._translated("scroll"):
                records, offset = page(offset)
            yield from (record_to_point(record) for record in records)
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._remove([check_point_id(i) for i in ids])

    def search(
        self,
        vector: Any,
        *,
        k: int = 10,
        filter: Any | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        query = check_vector(vector, self._collection_dim()).tolist()
        native = self._native(filter)
        with self._translated("search"):
            scored = self._query(query, k, offset, native, score_threshold)
        return [scored_to_hit(p) for p in scored]

    def count(self, filter: Any | None = None) -> int:
        native = self._native(filter)
        with self._translated("count"):
            return int(self._count(native))
