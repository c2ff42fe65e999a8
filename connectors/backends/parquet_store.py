"""Target ``parquet``: a collection as a portable folder of Parquet shards, not a database.

``clip-ingest --target parquet --out DIR`` writes ``DIR/<collection>/``::

    collection.json        {"format": 1, "model_id", "dim", "model_spec", "indexed_fields", "count",
                            "data": "v-<hex>"}: the folder holding the current shards
    v-<hex>/part-00000.parquet ...
                           columns id (string, UUID), vector (fixed_size_list<float32>[dim]),
                           payload (string: the payload as JSON); the model_id also in the
                           schema metadata of every shard

The ingestion semantics are the same as with a database (the same pipeline runs: content ids,
incremental re-runs, moves, ``--prune``), because this class is just another
:class:`VectorStore`: it holds the collection in memory while a run is open and rewrites the
shards on :meth:`flush` into a new version folder and then replaces ``collection.json``, which
names it, in one atomic rename: a reader (or a crash) never sees half an artifact. ``clip-ingest --from-parquet DIR`` loads an artifact into Qdrant or Milvus without the
model (clip-retrieval's npy + parquet output is the closest peer; it has no incremental runs).
Memory: the whole collection (about 2 KB per point at 512 dimensions). Search is exact and
unfiltered (numpy): an artifact is for moving embeddings, not for serving them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .base import CollectionSpec, Hit, InvalidSettingError, Point, StoreError, VectorStore, check_collection_model, check_point_id, check_vector

FORMAT_VERSION = 1
MANIFEST = "collection.json"
ROWS_PER_SHARD = 100_000


class ParquetStore(VectorStore):
    """``collection`` under the folder ``path`` (``path/collection/``)."""

    backend = "parquet"

    def __init__(self, collection: str, *, path: str) -> None:
        if not collection or os.sep in collection or collection.startswith("."):
            raise InvalidSettingError(f"collection name {collection!r} cannot be a folder name")
        self.collection = collection
        self.folder = Path(path).expanduser() / collection
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

    # -- the VectorStore protocol
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
        self._require()
        wanted, found = self._stored_for(payloads, with_vectors=True)
        for point in found:
            self._points[point.id] = Point(point.id, point.vector, wanted[point.id])
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

    def search(self, vector: np.ndarray, *, k: int = 10, filter: Any | None = None, offset: int = 0,
               score_threshold: float | None = None) -> list[Hit]:
        if filter is not None:
            raise InvalidSettingError("a Parquet artifact is searched without filters; load it into Qdrant or "
                                      "Milvus with clip-ingest --from-parquet to filter")
        dim = self._require()["dim"]
        points = list(self._points.values())
        if not points:
            return []
        scores = np.stack([p.vector for p in points]) @ check_vector(vector, dim)
        order = np.argsort(-scores, kind="stable")[offset : offset + k]
        hits = [Hit(points[i].id, float(scores[i]), dict(points[i].payload)) for i in order]
        return [h for h in hits if score_threshold is None or h.score >= score_threshold]

    def count(self, filter: Any | None = None) -> int:
        if filter is not None:
            raise InvalidSettingError("a Parquet artifact is counted without filters")
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

    def __repr__(self) -> str:
        return f"ParquetStore(collection={self.collection!r}, path={str(self.folder.parent)!r})"


__all__ = ["ParquetStore"]
