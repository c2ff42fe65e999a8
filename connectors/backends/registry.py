"""The backends, each described by the one :class:`~.descriptor.Backend` its package exports: the
databases that ingestion fills and search reads (a Parquet artifact is no backend: see
:mod:`clip_ingest.connectors.targets`).

This is the only module that lists them: config, the command-line tools, the ingestion job, the
benchmarks and the tests ask it (:func:`backend`, :data:`TARGETS`, :data:`SETTINGS`) and never name a
backend themselves. Adding a backend is one package and one entry in :data:`BACKENDS`
(docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from ..setting import Setting
from .base import InvalidSettingError, VectorStore
from .descriptor import Backend, StoreTarget
from .milvus import MILVUS
from .qdrant import QDRANT

#: every backend, in the order ``--target`` lists them
BACKENDS: tuple[Backend, ...] = (QDRANT, MILVUS)

_BY_NAME: dict[str, Backend] = {name: entry for entry in BACKENDS for name in entry.names}

#: every database ``--target`` value
TARGETS: tuple[str, ...] = tuple(_BY_NAME)

#: the backends' own settings (a server address, a token...), in registry order
SETTINGS: tuple[Setting, ...] = tuple(setting for entry in BACKENDS for setting in entry.settings)

#: the flags that point a command at a database server (``--qdrant-url``...), in registry order
ADDRESS_FLAGS: tuple[str, ...] = tuple(setting.flag for entry in BACKENDS for setting in entry.settings
                                       if setting.name == entry.address)

#: every :attr:`~.base.CollectionSpec.indexed_fields` type some backend can index
INDEX_TYPES: tuple[str, ...] = tuple(dict.fromkeys(kind for entry in BACKENDS for kind in entry.index_types))


def backend(name: str) -> Backend:
    """The backend that answers to target ``name``; :class:`~.base.InvalidSettingError` for an unknown one."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InvalidSettingError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None


def open_store(target: str, collection: str, **options: Any) -> VectorStore:
    """Connect to ``collection`` on ``target`` (see each backend's store class for its options)."""
    return backend(target).open(target, collection, **options)


def open_target(target: StoreTarget, collection: str) -> VectorStore:
    """Open ``collection`` where ``target`` says (unset options keep the store's defaults)."""
    return open_store(target.target, collection, **{k: v for k, v in target.options.items() if v is not None})


__all__ = ["ADDRESS_FLAGS", "BACKENDS", "INDEX_TYPES", "SETTINGS", "TARGETS", "Backend", "StoreTarget", "backend", "open_store", "open_target"]
