"""The ingestion run: scan -> plan -> read + decode (an executor) -> embed -> writer.

Stages are connected by bounded buffers (the executor's window of in-flight decodes,
a bounded queue to the writer thread), so memory stays flat however many files
are scanned. The executor (:mod:`.executor`: threads on this machine by default,
:mod:`.ray_executor` for a Ray cluster) only changes where decoding (and possibly
embedding) happens; ids, the skip of unchanged files, prune, dead letters and the
exactly-once writes are decided here, on the driver, for every executor.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from tenacity import Retrying

from ..backends.base import CollectionSpec, ModelMismatchError, StoreError, TransientStoreError
from ..backends.registry import ADDRESS_FLAGS
from ..cpus import decode_workers
from ..embedder import Embedder
from ..sink import Sink
from .deadletter import DeadLetter
from .executor import LocalExecutor, StageExecutor
from .metadata import MetadataLimits
from .mounts import SourceRecord
from .plan import DEFAULT_MAX_PRUNE, Planner, Shard
from .quarantine import Quarantine
from .reader import DEFAULT_READ_TIMEOUT_S
from .scan import DEFAULT_EXTENSIONS, Scan
from .stages import DecodeStage, EmbedStage, Failed, ImageEncoder, WriteOp, file_metadata
from .state import StoredState
from .summary import Progress, RunStats
from .writer import RETRY_FOR_S, ChangeSink, Writer, make_retrying

log = logging.getLogger("clip_ingest.ingest")


@dataclass(frozen=True)
class IngestOptions:
    """Everything one run needs besides the store and the embedder (see ``clip-ingest --help``)."""

    collection: str
    directories: Sequence[str] = ()
    manifests: Sequence[str] = ()
    extensions: Sequence[str] = DEFAULT_EXTENSIONS
    include_hidden: bool = False
    label_from_folder: bool = False
    index_fields: Mapping[str, str] = field(default_factory=dict)
    prune: bool = False
    max_prune: float = DEFAULT_MAX_PRUNE
    """The largest share of the stored paths one prune may remove; 1 also prunes an empty source or
    one on another filesystem than last time (see :mod:`.plan`). Past it nothing is pruned."""
    source_record: str | None = None
    """JSON file remembering each source folder's filesystem between runs (None: no such check)."""
    metadata_limits: MetadataLimits = MetadataLimits()
    """Limits of a sidecar or manifest row; past them the file fails with ``bad_metadata``."""
    recreate: bool = False
    dry_run: bool = False
    shard: Shard = Shard()
    dead_letter: str | None = None
    workers: int | None = None
    """Decode threads (None: sized to the CPUs this process may use, :func:`~..cpus.thread_plan`)."""
    batch_size: int = 32
    max_batch_bytes: int = 4 << 20
    queue_size: int = 8
    progress: bool | None = None
    retry_for: float = RETRY_FOR_S
    model_spec: str | None = None
    """Recorded with a new collection so that ``clip-search`` can default to the same model."""
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    """Seconds one file may take to read before it fails alone (reason ``timeout``)."""
    id_namespace: str | None = None
    """The name point ids derive from (default: ``collection``). ``clip-ingest migrate`` builds
    ``NAME__<model>`` with ``NAME``'s ids, so an id a client kept stays valid after the switch."""
    quarantine: str | None = None
    """The quarantine file: its files, unchanged since, are skipped unread (:mod:`.quarantine`)."""


class WriterThread:
    """Runs a :class:`Writer` on its own thread behind a bounded queue; re-raises its error."""

    _STOP = object()

    def __init__(self, writer: Writer, maxsize: int) -> None:
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="clip-ingest-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            op = self._queue.get()
            if op is self._STOP:
                return
            if self._error is None:
                try:
                    self.writer.handle(op)
                except BaseException as exc:  # handed to the main thread by put()/close()
                    self._error = exc

    def put(self, op: WriteOp) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(op)

    def close(self) -> None:
        """Wait for every queued op to be handled; raise the writer's error if any."""
        self._queue.put(self._STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error


def load_state(store: Sink, spec: CollectionSpec, *, recreate: bool, dry_run: bool) -> StoredState:
    """Prepare the collection (never in a dry run) and read what it holds.

    Raises:
        ModelMismatchError: the collection was built with another model or dimension.
    """
    if not dry_run:
        store.ensure_collection(spec, recreate=recreate)
        return StoredState() if recreate else StoredState.from_store(store)
    existing = store.collection_model()
    if existing is None or recreate:
        return StoredState()
    if existing != (spec.model_id, spec.dim):
        raise ModelMismatchError(
            f"collection {spec.name!r} was built with model {existing[0]} (dim {existing[1]}), "
            f"not {spec.model_id} (dim {spec.dim}); use --recreate or another --collection"
        )
    return StoredState.from_store(store)


_UNREACHABLE = ("connection refused", "fail connecting", "failed to connect", "name or service not known",
                "nodename nor servname", "no route to host", "network is unreachable", "connecterror")


class IngestInterrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM) between two images: everything embedded up to then
    was written and flushed; ``stats`` counts it. Re-running the same command resumes."""

    def __init__(self, stats: RunStats) -> None:
        super().__init__("interrupted")
        self.stats = stats


def check_reachable(store: Sink) -> None:
    """First contact, not retried: a database that cannot be reached at all is a wrong address far
    more often than an outage, so say so at once instead of retrying for ``retry_for`` seconds.
    A database that answers but is busy or loading, and any failure later in the run, are retried."""
    try:
        store.collection_model()
    except TransientStoreError as exc:
        if any(marker in str(exc).lower() for marker in _UNREACHABLE):
            raise StoreError(f"cannot reach the database ({exc}); check the address ({' / '.join(ADDRESS_FLAGS)}) "
                             "and that the server is running") from None


class _IngestRun:
    """The parts of one run and the steps that join them (see :func:`run_ingest`)."""

    def __init__(self, store: Sink, embedder: Embedder, options: IngestOptions, state: StoredState,
                 retrying: Retrying, on_change: ChangeSink | None) -> None:
        self.store, self.options, self.retrying = store, options, retrying
        self.stats = RunStats()
        self.dead = DeadLetter(None if options.dry_run else options.dead_letter)
        self.failed: set[str] = set()
        self.scan = Scan(
            options.directories, options.manifests, extensions=options.extensions,
            include_hidden=options.include_hidden, label_from_folder=options.label_from_folder,
            on_problem=lambda p: self.fail(p.path, p.reason, p.detail), metadata_limits=options.metadata_limits,
        )
        self.planner = Planner(self.scan, state, options.shard, on_unchanged=lambda: self.progress.advance(),
                               quarantine=Quarantine.load(options.quarantine))
        encoder = ImageEncoder(embedder)
        self.decode = DecodeStage(encoder, options.id_namespace or options.collection, state, decode=not options.dry_run,
                                  metadata_limits=options.metadata_limits)
        self.embed = EmbedStage(encoder, embedder.model_id, options.batch_size, embed=not options.dry_run)
        self.writer = Writer(store, self.stats, self.dead, dry_run=options.dry_run, max_batch_bytes=options.max_batch_bytes,
                             on_change=on_change, retrying=retrying, describe=self.describe)
        self.progress = Progress(self.stats, self.planner, enabled=options.progress)

    def fail(self, path: str, reason: str, detail: str) -> None:
        self.failed.add(path)
        self.stats.failed += 1
        self.dead.record(path, reason, detail)
        log.warning("skipped %s: %s: %s", path, reason, detail)

    def describe(self, path: str) -> tuple[dict, str] | None:
        """The metadata of a path that became a point's primary (see :data:`.writer.Describe`)."""
        file = self.planner.scanned_file(path)
        if file is None or path in self.failed:  # a file that failed this run is dead-lettered once
            return None
        try:
            return file_metadata(file, self.options.metadata_limits), file.meta_sig
        except ValueError as exc:
            self.fail(path, "bad_metadata", str(exc))
            return None

    def feed(self, executor: StageExecutor, should_stop: Callable[[], bool] | None) -> bool:
        """Decode, embed and hand every planned file to the writer; True when stopped before the end
        (Ctrl-C, SIGTERM turned into one by the CLI, or ``should_stop``): the batch being decoded is
        abandoned."""
        interrupted = False
        writer_thread = WriterThread(self.writer, self.options.queue_size)
        results = executor.results(self.planner, self.decode)
        try:
            for result in results:
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                if isinstance(result, Failed):
                    self.fail(result.path, result.reason, result.detail)
                else:
                    for op in self.embed.feed(result):
                        writer_thread.put(op)
                self.progress.advance()
            for op in self.embed.flush():
                writer_thread.put(op)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            try:
                results.close()  # type: ignore[attr-defined]
            except KeyboardInterrupt:  # a second Ctrl-C while the executor stops
                interrupted = True
            writer_thread.close()
        self.stats.scanned, self.stats.unchanged = self.planner.scanned, self.planner.unchanged
        self.stats.quarantined = self.planner.quarantined
        return interrupted

    def save_and_stop(self) -> None:
        """Keep what was embedded: write it, make it durable, then stop."""
        self.writer.flush_points()
        self.writer.flush_known()
        if not self.options.dry_run:
            self.retrying(self.store.flush)
        raise IngestInterrupted(self.stats)

    def finish(self) -> None:
        """``--prune`` (new points and moves written first: what is left gone is really gone), then
        the writer's last batches and removals; the source folders' filesystems are recorded."""
        options, writer = self.options, self.writer
        if not options.prune:
            writer.finish()
            return
        sources = SourceRecord(options.source_record)
        now = sources.current(self.scan.roots)
        moved = {root: f"was {was!r}, now {is_!r}" for root, (was, is_) in sources.changed(now).items()}
        writer.flush_points()
        writer.flush_known()
        plan = self.planner.prune_plan(options.max_prune, moved, writer.moved_away)
        if plan.refused:
            self.stats.prune_refused = plan.refused
            log.warning("prune refused: %s", plan.refused)
        writer.prune(plan.gone)
        writer.finish()
        if not options.dry_run:
            sources.save(now, keep=moved if options.max_prune < 1 else ())

    def close(self) -> None:
        self.progress.close()
        self.dead.close()
        self.stats.finish()


def _default_executor(options: IngestOptions) -> StageExecutor:
    """Decode threads sized to the CPUs, with enough decodes in flight to fill the next batch while
    the model runs on this one."""
    workers = decode_workers(options.workers)
    return LocalExecutor(workers, options.read_timeout, max(4 * workers, 2 * options.batch_size))


def run_ingest(
    store: Sink,
    embedder: Embedder,
    options: IngestOptions,
    *,
    on_change: ChangeSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    executor: StageExecutor | None = None,
) -> RunStats:
    """Ingest the sources of ``options`` into ``store``; returns the run's statistics.

    Files that cannot be ingested are counted in ``stats.failed`` and written to
    the dead-letter file; store errors other than transient ones propagate.
    ``should_stop`` (asked between images) stops the run like Ctrl-C does, for a run in a
    thread that cannot receive one (``clip-search serve --ingest-every``). ``executor`` runs
    the read + decode stage (default: :class:`~.executor.LocalExecutor` with ``options.workers``
    threads, by default sized to the CPUs).
    """
    spec = CollectionSpec(options.collection, embedder.dim, embedder.model_id, dict(options.index_fields),
                          model_spec=options.model_spec)
    retrying = make_retrying(options.retry_for)
    check_reachable(store)
    # idempotent, so a transient failure while preparing or reading the collection is retried whole
    state = retrying(load_state, store, spec, recreate=options.recreate, dry_run=options.dry_run)
    run = _IngestRun(store, embedder, options, state, retrying, on_change)
    try:
        if run.feed(executor or _default_executor(options), should_stop):
            run.save_and_stop()
        run.finish()
    finally:
        run.close()
    stats = run.stats
    log.info(
        "done: %d new, %d updated, %d moved, %d metadata updated, %d unchanged, %d failed, %d pruned (%d embedded) in %.1fs",
        stats.new, stats.updated, stats.moved, stats.metadata_updated, stats.unchanged, stats.failed, stats.pruned,
        stats.embedded, stats.duration_s,
    )
    return stats


__all__ = ["IngestInterrupted", "IngestOptions", "WriterThread", "load_state", "run_ingest"]
