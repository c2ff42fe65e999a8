"""What both Qdrant stores (qdrant-client and Qdrant Edge) share; imports neither client.

Opening a Qdrant Edge store must not load qdrant-client (about a second of imports, see
benchmarks/cli_latency.py), so the shared pieces live here rather than in either store.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..base import CollectionSpec, Hit, InvalidSettingError, Point
from ..common import GEO_KEYS

#: format of the model record stored with a Qdrant collection
METADATA_FORMAT = 1

#: CollectionSpec.indexed_fields type -> Qdrant payload index type (qdrant-client's
#: ``PayloadSchemaType`` values; Qdrant Edge spells the same names capitalised)
INDEX_TYPES: dict[str, str] = {
    "keyword": "keyword", "integer": "integer", "float": "float", "bool": "bool", "datetime": "datetime", "geo": "geo",
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
