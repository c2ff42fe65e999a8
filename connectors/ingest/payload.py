"""The payload stored with every point, and the path-list edits ingestion makes to it.

One point is one distinct image content. Its payload::

    path        primary path (the first of ``paths``)
    paths       every path where this content was found
    mtimes_ns   st_mtime_ns of each path, aligned with ``paths`` (incremental runs compare it)
    size        file size in bytes
    mtime       modification time of the primary path, Unix seconds (float, filterable)
    width, height, format, sha256, ingested_at (ISO-8601 UTC), model_id
    meta_sig    signature of the primary path's metadata sources (:func:`..scan.metadata_signature`)
    duplicate_review  a near-duplicate review decision (:mod:`..search.duplicates`), when one was made
    taken_at, taken_at_local, camera_make, camera_model, lens, gps, orientation
                photo metadata from the content's EXIF (:mod:`.exif`), each when the file has it
    ...         user metadata (sidecar JSON, folder label, manifest columns) as top-level keys

User metadata is always that of the primary path: when the primary changes (a move, a prune, an
edited file) or its sources change (a sidecar added, edited or removed, a manifest row edited,
``--label-from-folder`` switched), the next run replaces it without re-embedding
(:func:`with_metadata`). User keys that clash with the reserved names are dropped with a warning.
Photo metadata belongs to the content, like ``width``: it is read when the content is embedded
and kept through every later path and metadata edit.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from .exif import PHOTO_FIELDS

log = logging.getLogger(__name__)

REVIEW_FIELD = "duplicate_review"
"""Written by a near-duplicate review, not by ingestion: kept when the user metadata is replaced."""

RESERVED_KEYS = frozenset(
    {"path", "paths", "mtimes_ns", "size", "mtime", "width", "height", "sha256", "format", "ingested_at", "model_id",
     "meta_sig", REVIEW_FIELD, *PHOTO_FIELDS}
)


def clean_metadata(metadata: Mapping[str, Any], source: str) -> dict[str, Any]:
    """User metadata without reserved keys (each dropped key is logged as a warning)."""
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in RESERVED_KEYS:
            log.warning("%s: metadata key %r is reserved by clip-ingest and was ignored", source, key)
        else:
            clean[str(key)] = value
    return clean


def now_iso() -> str:
    """The current time as ISO-8601 UTC with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def new_payload(
    *,
    path: str,
    mtime_ns: int,
    size: int,
    sha256: str,
    width: int,
    height: int,
    format: str | None,
    model_id: str,
    metadata: Mapping[str, Any],
    meta_sig: str = "",
    photo: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload of a freshly embedded image found at ``path``; ``photo``: its EXIF fields
    (:func:`.exif.photo_metadata`)."""
    payload = dict(metadata)
    payload.update(photo or {})
    payload.update(
        meta_sig=meta_sig,
        path=path,
        paths=[path],
        mtimes_ns=[mtime_ns],
        size=size,
        mtime=mtime_ns / 1e9,
        width=width,
        height=height,
        format=format,
        sha256=sha256,
        ingested_at=now_iso(),
        model_id=model_id,
    )
    return payload


def with_metadata(payload: Mapping[str, Any], metadata: Mapping[str, Any], meta_sig: str) -> dict[str, Any]:
    """``payload`` with its user metadata replaced by ``metadata`` (keys not given are removed)."""
    kept = {k: v for k, v in payload.items() if k in RESERVED_KEYS}
    return {**metadata, **kept, "meta_sig": meta_sig}


def _sync_primary(payload: dict[str, Any]) -> dict[str, Any]:
    if payload["paths"]:
        payload["path"] = payload["paths"][0]
        payload["mtime"] = payload["mtimes_ns"][0] / 1e9
    return payload


def path_entries(payload: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(path, mtime_ns)`` pairs of a payload (tolerates a missing or short ``mtimes_ns``)."""
    paths = list(payload.get("paths") or ([payload["path"]] if payload.get("path") else []))
    mtimes = list(payload.get("mtimes_ns") or [])
    mtimes += [-1] * (len(paths) - len(mtimes))  # unknown mtime: never "unchanged", so re-checked
    return list(zip(paths, (int(m) for m in mtimes)))


def with_path(
    payload: Mapping[str, Any], path: str, mtime_ns: int, *, replace: Iterable[str] = ()
) -> dict[str, Any]:
    """A copy of ``payload`` listing ``path`` (mtime updated if already listed), minus the ``replace`` paths."""
    drop = set(replace) - {path}
    entries = [(p, m) for p, m in path_entries(payload) if p not in drop]
    for i, (p, _) in enumerate(entries):
        if p == path:
            entries[i] = (path, mtime_ns)
            break
    else:
        entries.append((path, mtime_ns))
    return _sync_primary({**payload, "paths": [p for p, _ in entries], "mtimes_ns": [m for _, m in entries]})


def without_paths(payload: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A copy of ``payload`` without ``paths``; its ``paths`` is empty when none is left."""
    drop = set(paths)
    entries = [(p, m) for p, m in path_entries(payload) if p not in drop]
    return _sync_primary({**payload, "paths": [p for p, _ in entries], "mtimes_ns": [m for _, m in entries]})
