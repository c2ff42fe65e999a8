"""``clip-ingest --from-parquet DIR``: a Parquet artifact's points into a database, without the model.

The artifact records its model; the collection is made (or checked) for that model, so the
model-safety check of every run applies. Points go through the writer's own batch loop
(:class:`~.writer.PointBatch`, sized by the target's write-batch bytes), each call retried like
any run's. Loading is idempotent: the same ids, so a re-run or an interrupted load converges.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..artifacts.parquet import ParquetArtifact
from ..backends.base import CollectionSpec, Point
from ..sink import Sink
from .pipeline import IngestInterrupted, IngestOptions
from .summary import RunStats
from .writer import PointBatch, make_retrying

log = logging.getLogger("clip_ingest.ingest")


class NotAnArtifact(ValueError):
    """The folder holds no artifact (a usage error)."""


def open_artifact(folder: str) -> ParquetArtifact:
    """The artifact in ``folder`` (a folder written by ``--target parquet``)."""
    source = Path(folder)
    artifact = ParquetArtifact(source.name, path=str(source.parent))
    recorded_spec(artifact)
    return artifact


def recorded_spec(artifact: ParquetArtifact) -> CollectionSpec:
    """The model, dimension and indexed fields the artifact records."""
    if artifact.spec is None:
        raise NotAnArtifact(f"{artifact.folder} is not a Parquet artifact (no collection.json; write one with "
                            "--target parquet --out DIR)")
    return artifact.spec


def load_artifact(store: Sink, artifact: ParquetArtifact, options: IngestOptions) -> RunStats:
    """Upsert every point of ``artifact`` into ``options.collection`` (``new`` counts them; a dry run
    counts without writing).

    Raises:
        ModelMismatchError: the collection holds another model's vectors.
        IngestInterrupted: stopped (Ctrl-C, SIGTERM); ``stats.new`` counts what was written.
    """
    recorded = recorded_spec(artifact)
    stats = RunStats()
    retrying = make_retrying(options.retry_for)

    def write(points: list[Point]) -> None:
        if not options.dry_run:
            retrying(store.upsert, points)
        stats.new += len(points)

    if not options.dry_run:
        spec = CollectionSpec(options.collection, recorded.dim, recorded.model_id, recorded.indexed_fields, recorded.model_spec)
        retrying(store.ensure_collection, spec, recreate=options.recreate)
    batch = PointBatch(write, options.max_batch_bytes)
    try:
        for point in artifact.points():
            batch.add(point)
        batch.flush()
    except KeyboardInterrupt:
        raise IngestInterrupted(stats) from None
    if not options.dry_run:
        retrying(store.flush)
    stats.finish()
    log.info("loaded %d points of %s from %s into collection %r", stats.new, recorded.model_id, artifact.folder,
             options.collection)
    return stats


__all__ = ["NotAnArtifact", "load_artifact", "open_artifact", "recorded_spec"]
