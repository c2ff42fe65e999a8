"""Helpers that more than one backend needs and that are no part of the :mod:`.base` interface.

Keeping them here means a server URL is redacted, and a secret scrubbed from a message, the same
way by every backend. The Qdrant helpers below serve both Qdrant backends (qdrant-client and
Qdrant Edge) and import neither client: opening a Qdrant Edge store does not load qdrant-client
(about a second of imports, see benchmarks/cli_latency.py).
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .base import CollectionSpec, Hit, InvalidSettingError, Point


def redact_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@`` (for repr and messages)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def scrub_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- Qdrant (qdrant-client and Qdrant Edge) ---------------------------------------------------

#: format of the model record stored with a Qdrant collection
METADATA_FORMAT = 1

#: CollectionSpec.indexed_fields types a Qdrant payload index exists for (each store maps them to its schema)
QDRANT_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "geo")


def metadata_record(spec: CollectionSpec) -> dict[str, Any]:
    """The model record stored with a Qdrant collection (by both Qdrant stores)."""
    record: dict[str, Any] = {"model_id": spec.model_id, "dim": spec.dim, "format": METADATA_FORMAT}
    if spec.model_spec:
        record["model_spec"] = spec.model_spec
    return record


#: a geo point's keys: a ``geo`` index covers them too, since box filters are ranges on them
GEO_KEYS = ("lat", "lon")


def payload_indexes(spec: CollectionSpec) -> list[tuple[str, str]]:
    """``(payload key, index type)`` of every Qdrant payload index ``spec`` asks for: a ``geo`` field
    gets the geo index (radius filters) and float indexes on ``FIELD.lat`` and ``FIELD.lon`` (box
    filters; see compile_qdrant)."""
    indexes: list[tuple[str, str]] = []
    for name, kind in spec.indexed_fields.items():
        indexes.append((name, kind))
        if kind == "geo":
            indexes.extend((f"{name}.{key}", "float") for key in GEO_KEYS)
    return indexes


def check_index_types(spec: CollectionSpec) -> None:
    """Raise ``ValueError`` for an ``indexed_fields`` type no Qdrant index exists for (before any change)."""
    unknown = {name: kind for name, kind in spec.indexed_fields.items() if kind not in QDRANT_INDEX_TYPES}
    if unknown:
        raise InvalidSettingError(f"unknown payload index types {unknown}; choose from {', '.join(QDRANT_INDEX_TYPES)}")


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
