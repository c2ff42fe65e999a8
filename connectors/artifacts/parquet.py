"""Target ``parquet``: a collection as a portable folder of Parquet shards, not a database.

``clip-ingest --target parquet --out DIR`` writes ``DIR/<collection>/``::

    collection.json        {"format": 1, "model_id", "dim", "model_spec", "indexed_fields", "count",
                            "data": "v-<hex>"}: the folder holding the current shards
    v-<hex>/part-00000.parquet ...
                           columns id (string, UUID), vector (fixed_size_list<float32>[dim]),
                           payload (string: the payload as JSON); the model_id also in the
                           schema metadata of every shard

An artifact is a :class:`~..sink.Sink` of the ingestion pipeline, not a
:class:`~..backends.base.VectorStore`: it is written to be loaded elsewhere, so it has no search,
no filters and no aliases, and it is not in the backend registry. The ingestion semantics are the
same as with a database (the same pipeline runs: content ids, incremental re-runs, moves,
``--prune``): :class:`ParquetArtifact` holds the collection in memory while a run is open and
rewrites the shards on :meth:`~ParquetArtifact.flush` into a new version folder and then replaces
``collection.json``, which names it, in one atomic rename: a reader (or a crash) never sees half an
artifact. It is also the source of ``clip-ingest --from-parquet DIR``, which loads an artifact into
Qdrant or Milvus without the model (clip-retrieval's npy + parquet output is the closest peer; it
has no incremental runs). Memory: the whole collection (about 2 KB per point at 512 dimensions).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..backends.base import CollectionSpec, InvalidSettingError, Point, StoreError, check_collection_model, check_point_id, check_vector
from ..backends.descriptor import StoreTarget

#: its ``--target`` value
TARGET = "parquet"
FORMAT_VERSION = 1
MANIFEST = "collection.json"
ROWS_PER_SHARD = 100_000
#: the most bytes of points one upsert carries (it only fills memory until the flush)
WRITE_BATCH_BYTES = 64 << 20


def locate(settings: Mapping[str, Any]) -> StoreTarget:
    """Where the artifacts go: the common ``--out`` setting (default DATA_DIR/parquet)."""
    path = os.path.abspath(settings["out"] or Path(settings["data_dir"]) / "parquet")
    return StoreTarget(TARGET, {"path": path}, path, embedded=True)


def artifact_folder(path: str, collection: str) -> Path:
    """The folder of ``collection``'s artifact under ``path`` (what ``--from-parquet`` takes)."""
    return Path(path).expanduser() / collection


class ParquetArtifact:
    """``collection`` under the folder ``path`` (``path/collection/``): a :class:`~..sink.Sink`,
    read back whole when it exists."""

    def __init__(self, collection: str, *, path: str) -> None:
        if not collection or os.sep in collection or collection.startswith("."):
            raise InvalidSettingError(f"collection name {collection!r} cannot be a folder name")
        self.collection = collection
        self.folder = artifact_folder(path, collection)
        self._spec: dict[str, Any] | None = None
        self._points: dict[str, Point] = {}
        self._dirty = False
        if (self.folder / MANIFEST).is_file():
            self._load()

    # -- reading an artifact
    def _load(self) -> None:
        import pyarrow.parquet as pq

        self._spec = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        if self._spec.get("format") != FORMAT_VERSION:
            raise StoreError(f"{self.folder}: unknown artifact format {self._spec.get('format')!r}")
        for shard in sorted((self.folder / self._spec["data"]).glob("part-*.parquet")):
            table = pq.read_table(shard)
            vectors = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(-1, self._spec["dim"])
            for point_id, vector, payload in zip(table.column("id").to_pylist(), vectors, table.column("payload").to_pylist()):
                self._points[point_id] = Point(point_id, vector, json.loads(payload))

    @property
    def spec(self) -> CollectionSpec | None:
        """The collection's spec as recorded in the artifact (None: no artifact yet)."""
        if self._spec is None:
            return None
        return CollectionSpec(self.collection, self._spec["dim"], self._spec["model_id"],
                              dict(self._spec.get("indexed_fields") or {}), self._spec.get("model_spec"))

    # -- the Sink protocol
    def ensure_collection(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        if self._spec is not None and not recreate:
            check_collection_model(self.collection, spec, (self._spec["model_id"], self._spec["dim"]))
            return
        self._spec = {"format": FORMAT_VERSION, "model_id": spec.model_id, "dim": spec.dim, "model_spec": spec.model_spec,
                      "indexed_fields": dict(spec.indexed_fields)}
        self._points = {}
        self._dirty = True

    def collection_model(self) -> tuple[str, int] | None:
        return None if self._spec is None else (self._spec["model_id"], self._spec["dim"])

    def collection_model_spec(self) -> str | None:
        return None if self._spec is None else self._spec.get("model_spec")

    def _require(self) -> dict[str, Any]:
        if self._spec is None:
            raise StoreError(f"the collection does not exist in {self!r} (ingest images first)")
        return self._spec

    def upsert(self, points: Sequence[Point]) -> None:
        dim = self._require()["dim"]
        checked = [Point(check_point_id(p.id), check_vector(p.vector, dim), dict(p.payload)) for p in points]
        for point in checked:
            json.dumps(point.payload)  # an unserialisable payload fails here, not at flush
            self._points[point.id] = point
        self._dirty = True

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the payloads of existing points; :class:`StoreError` and nothing written when one is missing."""
        self._require()
        wanted = {check_point_id(point_id): dict(payload) for point_id, payload in payloads.items()}
        missing = sorted(wanted.keys() - self._points.keys())
        if missing:
            raise StoreError(f"no point with id {missing[0]} in {self.collection!r} ({len(missing)} missing)")
        for point_id, payload in wanted.items():
            self._points[point_id] = Point(point_id, self._points[point_id].vector, payload)
        self._dirty = True

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        found = (self._points.get(check_point_id(i)) for i in ids)
        return [Point(p.id, p.vector if with_vectors else None, dict(p.payload)) for p in found if p is not None]

    def points(self) -> Iterator[Point]:
        """Every point with its vector (what ``clip-ingest --from-parquet`` loads)."""
        for point in list(self._points.values()):
            yield Point(point.id, point.vector, dict(point.payload))

    def scroll(self, fields: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[Point]:
        for point in list(self._points.values()):
            payload = point.payload if fields is None else {k: point.payload[k] for k in fields if k in point.payload}
            yield Point(point.id, None, dict(payload))

    def delete(self, ids: Sequence[str]) -> None:
        for point_id in ids:
            self._points.pop(check_point_id(point_id), None)
        self._dirty = True

    def count(self) -> int:
        return len(self._points)

    def flush(self) -> None:
        """Write the collection as shards into a new version folder, then point ``collection.json`` at it."""
        if not self._dirty or self._spec is None:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        version = f"v-{uuid.uuid4().hex}"
        spec = {**self._spec, "count": len(self._points), "data": version}
        staging = self.folder / version
        staging.mkdir(parents=True)
        try:
            points = sorted(self._points.values(), key=lambda p: p.id)  # deterministic shards
            schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), spec["dim"])), ("payload", pa.string())],
                               metadata={"clip_ingest.model_id": spec["model_id"], "clip_ingest.dim": str(spec["dim"])})
            for number, start in enumerate(range(0, max(len(points), 1), ROWS_PER_SHARD)):
                chunk = points[start : start + ROWS_PER_SHARD]
                flat = np.concatenate([p.vector for p in chunk]) if chunk else np.zeros(0, np.float32)
                table = pa.table({
                    "id": pa.array([p.id for p in chunk], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), spec["dim"]),
                    "payload": pa.array([json.dumps(p.payload, ensure_ascii=False) for p in chunk], pa.string()),
                }, schema=schema)
                pq.write_table(table, staging / f"part-{number:05d}.parquet")
            manifest = self.folder / f".{MANIFEST}.{version}"
            manifest.write_text(json.dumps(spec, indent=2), encoding="utf-8")
            os.replace(manifest, self.folder / MANIFEST)  # the switch: atomic
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._spec = spec
        self._dirty = False
        for old in self.folder.glob("v-*"):  # earlier versions (and leftovers of a crashed flush)
            if old.name != version:
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ParquetArtifact":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ParquetArtifact(collection={self.collection!r}, path={str(self.folder.parent)!r})"


__all__ = ["FORMAT_VERSION", "MANIFEST", "TARGET", "WRITE_BATCH_BYTES", "ParquetArtifact", "artifact_folder", "locate"]
