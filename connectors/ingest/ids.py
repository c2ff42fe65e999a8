"""Deterministic point IDs: the same image content always gets the same ID.

``point_id(collection, sha256) = uuid5(ID_NAMESPACE, f"{collection}/{sha256}")``
where ``sha256`` is the lowercase hex digest of the file's bytes and
``ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://github.com/clip-ingest/clip-ingest/point-id")``.

Because the ID depends only on the collection and the bytes, re-running an
ingestion (after a crash, from another machine, with lost local state) upserts
onto the same points instead of creating duplicates, and identical files at two
paths become one point.
"""

from __future__ import annotations

import hashlib
import os
import uuid

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/clip-ingest/clip-ingest/point-id")
"""Namespace of every point ID (fixed forever: changing it would duplicate every collection)."""


def point_id(collection: str, sha256: str) -> str:
    """The point ID of content with hex digest ``sha256`` in ``collection``."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{collection}/{sha256.lower()}"))


def sha256_bytes(data: bytes) -> str:
    """Lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def shard_of(relative_path: str, shards: int) -> int:
    """The shard (0..shards-1) that owns ``relative_path``, stable across machines and runs.

    Path separators are normalised to ``/`` so Windows and POSIX workers agree.
    """
    key = relative_path.replace(os.sep, "/").encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % shards
