"""Vector database connectors behind one interface (:class:`VectorStore`).

Each backend is a package that describes itself with one :class:`~.descriptor.Backend`, listed
in :mod:`.registry`; ``open_store(target, collection, **options)`` opens a store through it, and
each database client is imported only when its store is opened.
"""

from __future__ import annotations

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
from .registry import open_store

__all__ = [
    "CollectionSpec",
    "DimensionMismatchError",
    "Hit",
    "InvalidSettingError",
    "ModelMismatchError",
    "Point",
    "StoreError",
    "TransientStoreError",
    "VectorStore",
    "open_store",
]
