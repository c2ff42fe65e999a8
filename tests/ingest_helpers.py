"""Helpers for the ingestion tests: real stores by backend name, a counting embedder, a fault injector."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from clip_ingest.connectors.backends.base import VectorStore
from clip_ingest.connectors.backends.registry import TARGETS
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.ingest.summary import RunStats

from conftest import embedded_options, open_embedded

COLLECTION = "images"
ALL_BACKENDS, store_options = TARGETS, embedded_options


def open_test_store(backend: str, root: Path, collection: str = COLLECTION) -> VectorStore:
    """A real embedded store of ``backend`` under ``root``."""
    return open_embedded(backend, root, collection)


class CountingEmbedder:
    """Delegates to a real embedder through the plain :class:`Embedder` protocol, counting images."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.images = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def embed_images(self, items: Iterable[Any]) -> np.ndarray:
        items = list(items)
        self.images += len(items)
        return self.inner.embed_images(items)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_texts(texts)


class FaultyStore(VectorStore):
    """Wraps a real store; the named method raises ``error`` for its first ``times`` calls."""

    def __init__(self, inner: VectorStore, method: str, error: Exception, times: int = 1) -> None:
        self.inner = inner
        self.method = method
        self.error = error
        self.remaining = times
        self.calls = 0
        self.backend = inner.backend

    def _maybe_fail(self, name: str) -> None:
        if name == self.method:
            self.calls += 1
            if self.remaining > 0:
                self.remaining -= 1
                raise self.error

    def ensure_collection(self, spec, *, recreate=False):
        self._maybe_fail("ensure_collection")
        return self.inner.ensure_collection(spec, recreate=recreate)

    def collection_model(self):
        return self.inner.collection_model()

    def upsert(self, points):
        self._maybe_fail("upsert")
        return self.inner.upsert(points)

    def set_payloads(self, payloads):
        self._maybe_fail("set_payloads")
        return self.inner.set_payloads(payloads)

    def retrieve(self, ids, *, with_vectors=False):
        return self.inner.retrieve(ids, with_vectors=with_vectors)

    def scroll(self, fields=None, batch_size=1000):
        self._maybe_fail("scroll")
        return self.inner.scroll(fields, batch_size)

    def delete(self, ids):
        self._maybe_fail("delete")
        return self.inner.delete(ids)

    def search(self, vector, *, k=10, filter=None, offset=0, score_threshold=None):
        return self.inner.search(vector, k=k, filter=filter, offset=offset, score_threshold=score_threshold)

    def count(self, filter=None):
        return self.inner.count(filter)

    def flush(self):
        return self.inner.flush()

    def close(self):
        return self.inner.close()


def ingest(store: VectorStore, embedder: Any, *directories: Path, **options: Any) -> RunStats:
    """Run one ingestion with small test-friendly defaults."""
    options.setdefault("collection", COLLECTION)
    options.setdefault("workers", 2)
    options.setdefault("batch_size", 8)
    options.setdefault("progress", False)
    executor = options.pop("executor", None)
    return run_ingest(store, embedder, IngestOptions(directories=[str(d) for d in directories], **options),
                      executor=executor)


def points_by_path(store: VectorStore) -> dict[str, dict[str, Any]]:
    """Primary path -> payload (with the point id under ``"_id"``)."""
    return {p.payload["path"]: {**p.payload, "_id": p.id} for p in store.scroll()}


def all_paths(store: VectorStore) -> list[str]:
    """Every path listed by any point (sorted; a duplicate would show twice)."""
    return sorted(path for p in store.scroll(fields=["paths"]) for path in p.payload["paths"])


__all__ = [
    "ALL_BACKENDS", "COLLECTION", "CountingEmbedder", "FaultyStore",
    "all_paths", "ingest", "open_test_store", "points_by_path", "store_options",
]
