"""Qdrant Edge (``qdrant-edge-py``): Qdrant's Rust storage engine in-process, no server.

This is the embedded default of ``--target qdrant`` when no URL is given: it has real payload
indexes, filters, write-ahead-logged persistence and the same scoring as a Qdrant server.

Layout under ``path`` (one folder per collection)::

    <path>/<collection>/clip_ingest.json   the model record {"model_id", "dim", "format"}
    <path>/<collection>/shard/             the Edge shard (segments + WAL)

Where the model is remembered: an Edge shard has no collection metadata, so the record is a
small JSON file beside the shard, written atomically (temp file + rename) *before* the shard is
created; ``recreate`` removes the whole collection folder. A shard is opened by one process at a
time (its WAL is locked); a second opener gets a :class:`~.base.StoreError` saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import qdrant_edge as edge

from ..base import CollectionSpec, InvalidSettingError, StoreError, UNKNOWN_MODEL
from .common import Pager, QdrantStore, metadata_record, payload_indexes
from .compile_edge import to_edge_filter

RECORD_FILE = "clip_ingest.json"
SHARD_DIR = "shard"

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


class QdrantEdgeStore(QdrantStore):
    """A clip-ingest collection stored by Qdrant Edge in ``<path>/<collection>/``."""

    backend = "qdrant-edge"
    _compile = staticmethod(to_edge_filter)

    def __init__(self, collection: str, *, path: str | os.PathLike[str]) -> None:
        if not _SAFE_NAME.fullmatch(collection) or collection in {".", ".."}:
            raise InvalidSettingError(
                f"collection name {collection!r} must be letters, digits, '_', '.' or '-' "
                "(it names a folder under the storage path)"
            )
        self.collection = collection
        self._base = Path(path)
        self._where = str(self._base)
        self._root = self._base / collection  # an alias is a symbolic link to its collection's folder
        self._shard: edge.EdgeShard | None = None
        self._dim: int | None = None
        self._loaded_from: str | None = None  # the real folder of the loaded shard

    def __repr__(self) -> str:
        return f"QdrantEdgeStore(collection={self.collection!r}, path={str(self._root.parent)!r})"

    def _error(self, action: str, exc: Exception) -> StoreError:
        """Edge's plain exceptions as a StoreError naming the collection and the action."""
        detail = str(exc)
        if "WouldBlock" in detail:
            detail = (
                "the collection is open in another process (Qdrant Edge allows one at a time): a running "
                "clip-ingest holds it until it ends, a clip-search serve while it serves (let the server "
                "ingest: --ingest-every or POST /v1/ingest); or use a Qdrant server (--qdrant-url) when "
                "several processes need the collection at once"
            )
        return StoreError(f"qdrant-edge {action} on {self.collection!r} at {self._root}: {detail}")

    # -- collection -----------------------------------------------------------------------

    def collection_model_spec(self) -> str | None:
        record_path = self._root / RECORD_FILE
        try:
            spec = json.loads(record_path.read_text(encoding="utf-8")).get("model_spec")
        except (OSError, ValueError, AttributeError):
            return None
        return spec if isinstance(spec, str) else None

    def collection_model(self) -> tuple[str, int] | None:
        record_path = self._root / RECORD_FILE
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                return str(record["model_id"]), int(record["dim"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"unreadable model record {record_path}: {exc}") from None
        if (self._root / SHARD_DIR).is_dir():
            return UNKNOWN_MODEL, 0
        return None

    def _create(self, spec: CollectionSpec, *, drop: bool) -> None:
        """Replace the collection folder by a new model record (the shard is made by :meth:`_build`)."""
        self._drop()
        self._write_record(spec)

    def _build(self, spec: CollectionSpec) -> None:
        """Create the shard if the folder has none yet, then the payload indexes it lacks or holds
        with another type (an index of the wrong type answers wrongly: a datetime index made before
        ``datetime`` meant the float index matches no numeric range)."""
        if not (self._root / SHARD_DIR).is_dir():
            config = edge.EdgeConfig(
                vectors=edge.EdgeVectorParams(
                    size=spec.dim, distance=edge.Distance.Cosine, datatype=edge.VectorStorageDatatype.Float32
                )
            )
            with self._translated("create collection"):
                self._shard = edge.EdgeShard.create(str(self._root / SHARD_DIR), config)
                self._loaded_from = os.path.realpath(self._root)
        shard = self._open()
        with self._translated("create payload index"):
            existing = shard.info().payload_schema
            for name, kind in payload_indexes(spec):
                if name not in existing or existing[name].data_type != _schema(kind):
                    shard.update(edge.UpdateOperation.create_field_index(name, _schema(kind)))

    def _drop(self) -> None:
        """Close and delete the collection folder (shard and record)."""
        self.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def _write_record(self, spec: CollectionSpec) -> None:
        """Write the model record atomically, so a crash leaves the old record or the new one."""
        self._root.mkdir(parents=True, exist_ok=True)
        tmp = self._root / f".{RECORD_FILE}.tmp"
        tmp.write_text(json.dumps(metadata_record(spec)), encoding="utf-8")
        os.replace(tmp, self._root / RECORD_FILE)

    def _follow(self) -> None:
        """After an alias switch, drop the shard and dimension of the collection it pointed to before."""
        if self._loaded_from is not None and os.path.realpath(self._root) != self._loaded_from:
            # adopted: the folder itself was renamed, and its old name is now the alias (a link)
            moved = os.path.islink(self._loaded_from) or not os.path.isdir(self._loaded_from)
            try:
                self.close()
            except StoreError:
                if not moved:
                    raise
                self._shard = None  # its flush wrote to the old path; the WAL in the renamed folder has every write
            self._dim = None

    def _open(self) -> edge.EdgeShard:
        """The loaded shard (loaded on first use), or StoreError if the collection does not exist."""
        self._follow()
        if self._shard is None:
            if not (self._root / SHARD_DIR).is_dir():
                raise StoreError(f"collection {self.collection!r} does not exist at {self._root.parent}; ingest first")
            with self._translated("open"):
                real = os.path.realpath(self._root)  # not through an alias: a switch must not move its files
                self._shard = edge.EdgeShard.load(os.path.join(real, SHARD_DIR))
            self._loaded_from = real
        return self._shard

    def _update(self, action: str, operation: edge.UpdateOperation) -> None:
        """Apply one update operation to the shard, translating errors."""
        shard = self._open()
        with self._translated(action):
            shard.update(operation)

    # -- points ---------------------------------------------------------------------------

    def _write(self, rows: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        batch = [edge.Point(point_id, vector, payload) for point_id, vector, payload in rows]
        self._update("upsert", edge.UpdateOperation.upsert_points(batch))

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        wanted, _ = self._stored_for(payloads)
        for point_id, payload in wanted.items():  # in-process: one operation per point costs no round trip
            self._update("set payload", edge.UpdateOperation.overwrite_payload([point_id], payload))

    def _fetch(self, ids: list[str], with_vectors: bool) -> Sequence[Any]:
        return self._open().retrieve(ids, with_payload=True, with_vector=with_vectors)

    def _pager(self, with_payload: bool | list[str], batch_size: int) -> Pager:
        selector = edge.PayloadSelector.Include(with_payload) if isinstance(with_payload, list) else with_payload
        shard = self._open()

        def page(offset: Any) -> tuple[Sequence[Any], Any]:
            return shard.scroll(edge.ScrollRequest(offset=offset, limit=batch_size, with_payload=selector, with_vector=False))

        return page

    def _remove(self, ids: list[str]) -> None:
        self._update("delete", edge.UpdateOperation.delete_points(ids))

    def _query(self, query: list[float], k: int, offset: int, native: Any, score_threshold: float | None) -> Sequence[Any]:
        request = edge.QueryRequest(limit=k, offset=offset, query=edge.Query.Nearest(query), filter=native,
                                    score_threshold=score_threshold, with_payload=True)
        return self._open().query(request)

    def _count(self, native: Any) -> int:
        return self._open().count(edge.CountRequest(exact=True, filter=native))

    def flush(self) -> None:
        if self._shard is not None:
            with self._translated("flush"):
                self._shard.flush()

    # -- aliases: symbolic links beside the collection folders, switched by an atomic rename

    def alias_target(self) -> str | None:
        return os.readlink(self._root) if self._root.is_symlink() else None

    def aliases(self) -> dict[str, str]:
        if not self._base.is_dir():
            return {}
        return {entry.name: os.readlink(entry) for entry in sorted(self._base.iterdir())
                if entry.is_symlink() and not entry.name.startswith(".")}

    def collections(self) -> list[str]:
        if not self._base.is_dir():
            return []
        return [entry.name for entry in sorted(self._base.iterdir())
                if not entry.is_symlink() and (entry / SHARD_DIR).is_dir() and not entry.name.startswith(".")]

    def switch_alias(self, alias: str, collection: str) -> None:
        if collection not in self.collections():
            raise StoreError(f"no collection {collection!r} at {self._base} to point alias {alias!r} at")
        link = self._base / alias
        if link.exists() and not link.is_symlink():
            raise StoreError(f"{alias!r} is a collection at {self._base}, not an alias (migrate adopts it first)")
        tmp = self._base / f".{alias}.alias-tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(collection, tmp)  # relative: the storage folder can move
        os.replace(tmp, link)  # rename(2) over the old link: readers see the old target or the new one

    def adopt(self, physical: str) -> None:
        if self.alias_target() is not None:
            raise StoreError(f"{self.collection!r} is an alias already")
        if (self._base / physical).exists():
            raise StoreError(f"{physical!r} exists at {self._base}")
        self.close()
        tmp = self._base / f".{self.collection}.alias-tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(physical, tmp)
        os.rename(self._root, self._base / physical)
        os.replace(tmp, self._root)  # the name is missing between these two renames: microseconds

    def drop_collection(self, collection: str) -> None:
        self._check_droppable(collection)
        if collection not in self.collections():
            raise StoreError(f"no collection {collection!r} at {self._base}")
        if os.path.realpath(self._root) == os.path.realpath(self._base / collection):
            self.close()
        shutil.rmtree(self._base / collection)

    def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            self._loaded_from = None
            with self._translated("close"):
                shard.flush()
                shard.close()


def _schema(index_type: str) -> edge.PayloadSchemaType:
    """A Qdrant index type (:data:`.common.INDEX_TYPES`) as Edge spells it (``keyword`` -> ``Keyword``)."""
    return getattr(edge.PayloadSchemaType, index_type.capitalize())
