"""Qdrant: a server or qdrant-client's local mode (:mod:`.client_store`), or Qdrant Edge
embedded in this process (:mod:`.edge_store`), with their filter compilers.

Target ``qdrant`` is a server when ``--qdrant-url`` is given and Qdrant Edge otherwise (Qdrant's
own engine: real payload indexes, WAL persistence); ``qdrant-edge`` is always Qdrant Edge.
qdrant-client's local mode stays reachable with ``open_qdrant(path=..., client=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ...setting import Setting
from ..base import InvalidSettingError, VectorStore
from ..common import strip_credentials
from ..descriptor import Backend, StoreTarget
from .common import INDEX_TYPES
from .compile import to_qdrant_filter
from .compile_edge import to_edge_filter

#: options that only mean something to a Qdrant server (``url=``)
_SERVER_OPTIONS = ("api_key", "timeout", "prefer_grpc", "grpc_port", "https", "verify")


def open_qdrant(collection: str, *, client: bool = False, **options: Any) -> VectorStore:
    """Target ``qdrant``: a server or in-memory local mode given ``url=`` / ``location=`` (or
    qdrant-client's local mode at ``path=`` with ``client=True``), else Qdrant Edge at ``path=``.

    Options set to None are ignored, so a CLI can pass all of its flags; server-only options
    without ``url=`` are an error, not silently dropped.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if client or "url" in given or "location" in given:
        from .client_store import QdrantClientStore

        return QdrantClientStore(collection, **given)
    server_only = sorted(name for name in given if name in _SERVER_OPTIONS)
    if server_only:
        raise InvalidSettingError(f"{', '.join(server_only)} only apply to a Qdrant server; give url= as well")
    from .edge_store import QdrantEdgeStore

    return QdrantEdgeStore(collection, **given)


def _open(name: str, collection: str, **options: Any) -> VectorStore:
    if name == "qdrant-edge":
        from .edge_store import QdrantEdgeStore

        return QdrantEdgeStore(collection, **options)
    return open_qdrant(collection, **options)


def _locate(name: str, settings: Mapping[str, Any]) -> StoreTarget:
    """A server given ``qdrant_url`` (target ``qdrant`` only), else a folder: ``qdrant_path`` or DATA_DIR/NAME."""
    url = settings["qdrant_url"]
    if name == "qdrant" and url:
        return StoreTarget(name, {"url": url, "api_key": settings["qdrant_api_key"]}, strip_credentials(url), embedded=False)
    path = os.path.abspath(settings["qdrant_path"] or Path(settings["data_dir"]) / name)
    return StoreTarget(name, {"path": path}, path, embedded=True)


QDRANT = Backend(
    names=("qdrant", "qdrant-edge"),
    open=_open,
    locate=_locate,
    write_batch_bytes=4 << 20,
    settings=(
        Setting("qdrant_url", str, None, help="Qdrant server URL (default: embedded local folder)"),
        Setting("qdrant_path", str, None, help="Embedded Qdrant folder", default_text="DATA_DIR/qdrant"),
        Setting("qdrant_api_key", str, None, secret=True),
    ),
    index_types=INDEX_TYPES,
    filter_compilers={"qdrant": to_qdrant_filter, "qdrant-edge": to_edge_filter},
    address="qdrant_url",
)

__all__ = ["QDRANT", "open_qdrant"]
