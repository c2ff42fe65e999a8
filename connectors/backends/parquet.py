"""Target ``parquet``: a portable folder of Parquet shards (:mod:`.parquet_store`), written to be
loaded elsewhere (``clip-ingest --from-parquet``); it is no database, so it is not searchable.
Its folder is the common ``--out`` setting (default DATA_DIR/parquet)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .base import VectorStore
from .descriptor import Backend, StoreTarget


def _open(name: str, collection: str, **options: Any) -> VectorStore:
    from .parquet_store import ParquetStore

    return ParquetStore(collection, **options)


def _locate(name: str, settings: Mapping[str, Any]) -> StoreTarget:
    path = os.path.abspath(settings["out"] or Path(settings["data_dir"]) / "parquet")
    return StoreTarget(name, {"path": path}, path, embedded=True)


PARQUET = Backend(names=("parquet",), open=_open, locate=_locate, write_batch_bytes=64 << 20, searchable=False)

__all__ = ["PARQUET"]
