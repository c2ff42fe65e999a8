"""Milvus: a server (``--milvus-uri http://host:19530``) or Milvus Lite, a ``.db`` file opened
in this process (:mod:`.store`), with its filter compiler (:mod:`.compile`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ...setting import Setting
from ..base import VectorStore
from ..common import strip_credentials
from ..descriptor import Backend, StoreTarget
from .compile import to_milvus_expr
from .options import CONSISTENCY_LEVELS, DEFAULT_MAX_REQUEST_BYTES, JSON_CAST_TYPES


def _open(name: str, collection: str, **options: Any) -> VectorStore:
    from .store import MilvusStore

    return MilvusStore(collection, **options)


def _locate(name: str, settings: Mapping[str, Any]) -> StoreTarget:
    """A server when ``milvus_uri`` has a scheme, else a Milvus Lite file (default DATA_DIR/milvus.db)."""
    uri = settings["milvus_uri"] or str(Path(settings["data_dir"]) / "milvus.db")
    server = "://" in uri
    location = strip_credentials(uri) if server else os.path.abspath(uri)
    options = {"uri": uri if server else location, "token": settings["milvus_token"],
               "search_consistency": settings["milvus_consistency"]}
    return StoreTarget(name, options, location, embedded=not server)


MILVUS = Backend(
    names=("milvus",),
    open=_open,
    locate=_locate,
    write_batch_bytes=DEFAULT_MAX_REQUEST_BYTES,
    settings=(
        Setting("milvus_uri", str, None, help="Milvus server URI or Milvus Lite file", default_text="DATA_DIR/milvus.db"),
        Setting("milvus_consistency", str, "Strong", choices=CONSISTENCY_LEVELS,
                help="Consistency of Milvus searches: Strong sees every acknowledged write but waits for the "
                "server's time tick (about 200 ms on a server); Bounded answers at once from data a few "
                "seconds old"),
        Setting("milvus_token", str, None, secret=True),
    ),
    index_types=JSON_CAST_TYPES,
    filter_compilers={"milvus": to_milvus_expr},
    address="milvus_uri",
    holds="location",
)

__all__ = ["MILVUS"]
