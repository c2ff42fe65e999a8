"""What an ingestion writes to: a :class:`Sink`.

The ingestion pipeline, the ``--from-parquet`` load and the job's runner call exactly these
operations on the collection they fill, and nothing else. A database's
:class:`~.backends.base.VectorStore` has them all (and search besides); a Parquet artifact
(:class:`~.artifacts.parquet.ParquetArtifact`) has them and nothing more. Both satisfy the
protocol by shape: neither inherits from it.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from .backends.base import CollectionSpec, Point


@runtime_checkable
class Sink(Protocol):
    """One collection that ingestion writes: created or checked for a model, read back for what it
    holds, then changed point by point (the semantics of each call are :class:`~.backends.base.VectorStore`'s)."""

    collection: str

    def ensure_collection(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        """Create the collection if missing, else check its model and dimension (``ModelMismatchError``)."""

    def collection_model(self) -> tuple[str, int] | None:
        """The ``(model_id, dim)`` the collection was built with; None if it does not exist."""

    def collection_model_spec(self) -> str | None:
        """The model spec the collection records (None: not recorded)."""

    def scroll(self, fields: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[Point]:
        """Every point without its vector, payload limited to ``fields`` (None: all)."""

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids that exist."""

    def count(self) -> int:
        """How many points the collection holds (what ``clip-ingest status`` reports)."""

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the payloads of existing points, keeping their vectors."""

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    def flush(self) -> None:
        """Make every write durable (and visible to readers)."""

    def close(self) -> None:
        """Release what it holds (an artifact first writes what is pending)."""

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc: object) -> None: ...


__all__ = ["Sink"]
