"""Every ``--target`` of ``clip-ingest``: the databases of the backend registry, then the artifacts.

A database (:mod:`.backends.registry`) is searched; an artifact (:mod:`.artifacts`) is only
written, to be loaded into a database later. This is the one place that tells them apart: config
takes the ``--target`` choices and the location of a target from here, and the ingestion job opens
what it writes, a store or an artifact, with :func:`open_sink`.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from .artifacts import parquet
from .backends import registry
from .backends.descriptor import StoreTarget
from .sink import Sink

#: the ``--target`` values that write an artifact
ARTIFACT_TARGETS: tuple[str, ...] = (parquet.TARGET,)

#: every ``--target`` value, in the order ``--help`` lists them
TARGETS: tuple[str, ...] = registry.TARGETS + ARTIFACT_TARGETS


def is_artifact(name: str) -> bool:
    """Whether target ``name`` writes an artifact (no search, no aliases) rather than a database."""
    return name in ARTIFACT_TARGETS


def locate(name: str, settings: Mapping[str, Any]) -> StoreTarget:
    """Where target ``name`` keeps its collections, from resolved settings."""
    return parquet.locate(settings) if is_artifact(name) else registry.backend(name).locate(name, settings)


def open_sink(target: StoreTarget, collection: str) -> Sink:
    """What an ingestion into ``collection`` at ``target`` writes: the artifact, or the database's store."""
    if is_artifact(target.target):
        return parquet.ParquetArtifact(collection, **target.options)
    return registry.open_target(target, collection)


def write_batch_bytes(name: str) -> int:
    """The most bytes of points one write of target ``name`` carries."""
    return parquet.WRITE_BATCH_BYTES if is_artifact(name) else registry.backend(name).write_batch_bytes


def holds(name: str) -> Literal["collection", "location"]:
    """What a process keeps open at an embedded target ``name``: an artifact, its one collection."""
    return "collection" if is_artifact(name) else registry.backend(name).holds


__all__ = ["ARTIFACT_TARGETS", "TARGETS", "holds", "is_artifact", "locate", "open_sink", "write_batch_bytes"]
