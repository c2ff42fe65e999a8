"""The ingestion job: one configured run (:class:`IngestJob`), built from settings
(:func:`job_from_settings`), with its lock, dead-letter file and where its summary goes.

Every way a collection is filled is such a job, run by :func:`~.runner.run_job`: ``clip-ingest``,
``clip-ingest --from-parquet`` (an artifact's points instead of images), each pass of
``clip-ingest migrate`` and the scheduled passes of ``clip-search serve --ingest-every``.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any

from ..config import Settings, StoreTarget, store_target
from ..cpus import decode_workers
from ..sink import Sink
from ..targets import open_sink, write_batch_bytes
from .deadletter import RunFiles
from .lock import RunLock, default_lock_path
from .metadata import MetadataLimits
from .pipeline import IngestOptions
from .plan import Shard
from .scan import is_source_folder
from .summary import write_summary
from .textfile_metrics import write_textfile

log = logging.getLogger("clip_ingest.ingest")

INGEST_COMMAND = "clip-ingest"


@dataclass(frozen=True)
class IngestJob:
    """One configured ingestion: what ``clip-ingest`` runs once and ``clip-search serve
    --ingest-every`` runs on a schedule, with the same lock, dead-letter file and summary."""

    target: StoreTarget
    options: IngestOptions
    lock_path: str | None
    """The run lock each run takes; None: the caller holds it (a server on its embedded store)."""
    summary_path: str | None = None
    last_run_path: str | None = None
    """Every run's summary also goes here (``clip-ingest status`` reads it); None in a dry run."""
    metrics_path: str | None = None
    """``--metrics-file``: every run's summary as a Prometheus text file; None: not written."""
    lock_timeout: float = 0.0
    failed_files_ok: bool = False
    """Failed files exit 0 (the outcome word stays ``failed_files``): see ``clip-ingest --help``."""
    command: str = INGEST_COMMAND
    """Who holds the lock, as a refused run reports it."""
    artifact: str | None = None
    """``--from-parquet``: load this artifact's points instead of embedding the sources."""

    @property
    def dead_letter(self) -> str | None:
        """The dead-letter file this job's runs write (None in a dry run)."""
        return None if self.options.dry_run else self.options.dead_letter

    def summary_fields(self) -> dict[str, Any]:
        """The fields of a run summary that come from the configuration, not the run."""
        source = {"source": self.artifact} if self.artifact else {}
        return {"target": self.target.target, "location": self.target.location, "collection": self.options.collection,
                "dry_run": self.options.dry_run, **source}

    def run_lock(self) -> RunLock | nullcontext:
        """The run lock, recording this job's command and store as its holder."""
        if self.lock_path is None:
            return nullcontext()
        about = {"target": self.target.target, "location": self.target.location,
                 "collection": self.options.collection, "holds_store": False}
        return RunLock(self.lock_path, timeout=self.lock_timeout, command=self.command, about=about)

    def record(self, summary: dict[str, Any]) -> None:
        """Write a run's summary where ``--summary`` asks, to the last-run file and, as gauges,
        to the ``--metrics-file``."""
        for path in {self.summary_path, self.last_run_path} - {None}:
            write_summary(path, summary)
        if self.metrics_path:
            try:
                write_textfile(self.metrics_path, summary)
            except OSError as exc:  # the run's work is done and recorded: a monitor reports the stale file
                log.error("cannot write the metrics file %s: %s", self.metrics_path, exc)

    def open_sink(self) -> Sink:
        """Open what the job writes: the database's store (unset options keep the backend's
        defaults) or the artifact."""
        return open_sink(self.target, self.options.collection)


def metadata_limits(settings: Settings) -> MetadataLimits:
    """The ``metadata_*`` settings as :class:`MetadataLimits`.

    Raises:
        ValueError: a bad limit.
    """
    return MetadataLimits(**{f.name: settings[f"metadata_{f.name}"] for f in fields(MetadataLimits)})


def job_from_settings(settings: Settings, shard: Shard, index_fields: dict[str, str]) -> IngestJob:
    """The :class:`IngestJob` that ``settings`` (``clip-ingest``'s, resolved) describe.

    Raises:
        ValueError: a bad ``metadata_*`` limit.
    """
    target = store_target(settings)
    files = RunFiles.of(settings.data_dir, target.target, settings.collection, shard.label, settings.dead_letter)
    # shards of a server collection run in parallel; an embedded store is open in one process at a time
    worker = "" if target.embedded else shard.label
    options = IngestOptions(
        collection=settings.collection, directories=settings.sources, manifests=settings.manifest,
        extensions=settings.ext, include_hidden=settings.include_hidden, label_from_folder=settings.label_from_folder,
        index_fields=index_fields, prune=settings.prune, max_prune=settings.max_prune,
        source_record=None if settings.dry_run else files.sources, metadata_limits=metadata_limits(settings),
        recreate=settings.recreate, dry_run=settings.dry_run, shard=shard, dead_letter=files.dead_letter,
        workers=decode_workers(settings.workers, settings.get("cpus")), batch_size=settings.batch_size,
        max_batch_bytes=write_batch_bytes(target.target), retry_for=settings.retry_for,
        read_timeout=settings.read_timeout,
        model_spec=os.path.abspath(settings.model) if os.path.isdir(settings.model) else settings.model,
        id_namespace=settings.get("id_namespace"), quarantine=files.quarantine,
    )
    return IngestJob(
        target, options, settings.lock_file or default_lock_path(target.target, target.location, settings.collection, worker),
        summary_path=settings.summary, last_run_path=None if settings.dry_run else files.last_run,
        metrics_path=None if settings.dry_run else settings.get("metrics_file"), lock_timeout=settings.lock_timeout,
        failed_files_ok=bool(settings.get("failed_files_ok")), artifact=settings.get("from_parquet"),
    )


def missing_sources(options: IngestOptions) -> list[str]:
    """Configured folders (or object-store prefixes) and manifests that do not exist.

    Raises:
        ValueError: an object-store URI that carries credentials.
        OSError: an object store that cannot be listed (unreachable, refused credentials).
    """
    def is_folder(source: str) -> bool:
        try:
            return is_source_folder(source)
        except OSError as exc:
            raise OSError(f"cannot list {source}: {exc}") from exc

    return [p for p in options.directories if not is_folder(p)] + [m for m in options.manifests if not os.path.isfile(m)]


__all__ = ["INGEST_COMMAND", "IngestJob", "job_from_settings", "metadata_limits", "missing_sources"]
