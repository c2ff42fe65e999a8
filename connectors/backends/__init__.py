"""Vector database connectors behind one interface (:class:`VectorStore`).

``open_store(target, collection, **options)`` is the single place that maps a
``--target`` name to its module; each backend is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    CollectionSpec,
    DimensionMismatchError,
    Hit,
    ModelMismatchError,
    Point,
    StoreError,
    TransientStoreError,
    VectorStore,
)

#: target name -> "module:class"
BACKENDS: dict[str, str] = {
    "qdrant": "clip_ingest.connectors.backends.qdrant_client_store:QdrantClientStore",
    "qdrant-edge": "clip_ingest.connectors.backends.qdrant_edge_store:QdrantEdgeStore",
    "milvus": "clip_ingest.connectors.backends.milvus_store:MilvusStore",
}


def open_store(target: str, collection: str, **options: Any) -> VectorStore:
    """Connect to ``collection`` on ``target`` (see each backend's class for its options)."""
    try:
        module_name, class_name = BACKENDS[target].split(":")
    except KeyError:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(sorted(BACKENDS))}") from None
    store_cls = getattr(importlib.import_module(module_name), class_name)
    return store_cls(collection, **options)


__all__ = [
    "BACKENDS",
    "CollectionSpec",
    "DimensionMismatchError",
    "Hit",
    "ModelMismatchError",
    "Point",
    "StoreError",
    "TransientStoreError",
    "VectorStore",
    "open_store",
]
