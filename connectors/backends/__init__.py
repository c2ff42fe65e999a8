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
    InvalidSettingError,
    ModelMismatchError,
    Point,
    StoreError,
    TransientStoreError,
    VectorStore,
)

#: target name -> "module:attribute", a VectorStore class or a factory taking (collection, **options)
BACKENDS: dict[str, str] = {
    "qdrant": "clip_ingest.connectors.backends:open_qdrant",
    "qdrant-edge": "clip_ingest.connectors.backends.qdrant_edge_store:QdrantEdgeStore",
    "milvus": "clip_ingest.connectors.backends.milvus_store:MilvusStore",
    "parquet": "clip_ingest.connectors.backends.parquet_store:ParquetStore",
}


#: options that only mean something to a Qdrant server (``url=``)
_QDRANT_SERVER_OPTIONS = ("api_key", "timeout", "prefer_grpc", "grpc_port", "https", "verify")


def open_qdrant(collection: str, **options: Any) -> VectorStore:
    """Target ``qdrant``: a server or in-memory local mode given ``url=`` / ``location=``, else Qdrant Edge at ``path=``.

    Qdrant Edge is the embedded default because it is Qdrant's own engine (real payload
    indexes, WAL persistence); qdrant-client's local mode stays reachable with
    ``QdrantClientStore(path=...)``. Options set to None are ignored, so a CLI can pass
    all of its flags; server-only options without ``url=`` are an error, not silently dropped.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if "url" in given or "location" in given:
        from .qdrant_client_store import QdrantClientStore

        return QdrantClientStore(collection, **given)
    server_only = sorted(name for name in given if name in _QDRANT_SERVER_OPTIONS)
    if server_only:
        raise InvalidSettingError(f"{', '.join(server_only)} only apply to a Qdrant server; give url= as well")
    from .qdrant_edge_store import QdrantEdgeStore

    return QdrantEdgeStore(collection, **given)


def open_store(target: str, collection: str, **options: Any) -> VectorStore:
    """Connect to ``collection`` on ``target`` (see each backend's class for its options)."""
    try:
        module_name, class_name = BACKENDS[target].split(":")
    except KeyError:
        raise InvalidSettingError(f"unknown target {target!r}; choose one of {', '.join(sorted(BACKENDS))}") from None
    store_cls = getattr(importlib.import_module(module_name), class_name)
    return store_cls(collection, **options)


__all__ = [
    "BACKENDS",
    "CollectionSpec",
    "DimensionMismatchError",
    "Hit",
    "InvalidSettingError",
    "ModelMismatchError",
    "Point",
    "StoreError",
    "TransientStoreError",
    "VectorStore",
    "open_qdrant",
    "open_store",
]
