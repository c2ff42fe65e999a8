"""Incremental ingestion inside ``clip-search serve`` (``--ingest-every``), for the embedded stores.

An embedded store (Qdrant local / Edge, Milvus Lite) can be open in one process only, so a cron
``clip-ingest`` cannot update the collection a server holds open. Instead the server runs the
same :func:`~clip_ingest.connectors.ingest.pipeline.run_ingest` itself, in one background thread,
through the server's own (serialised) store handle: the same run lock, dead-letter file, JSON
summary (with the same outcome words and exit codes) as a cron run, and searches keep being
answered between write batches. Nothing here is a second copy of the ingestion semantics.

The run lock: on an embedded store the server holds it for as long as it serves (so a cron
``clip-ingest`` is refused with a message naming the server) and passes run under it
(``lock_path=None``); on a database server each pass takes it, as a cron run would.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ..embedder import Embedder
from ..ingest.lock import SERVE_COMMAND, LockedError, RunLock
from ..ingest.pipeline import IngestInterrupted, IngestOptions, run_ingest
from ..ingest.summary import RunStats, exit_code_of, failed_files_fields, outcome_fields, write_summary

log = logging.getLogger("clip_ingest.serve")

#: called after each pass with its outcome word (:data:`~..ingest.summary.OUTCOMES`: ok, failed_files,
#: interrupted, locked, fatal...)
OutcomeObserver = Callable[[str], None]


class ScheduledIngest:
    """Run ``options``' ingestion now, then every ``every_s`` seconds, and whenever :meth:`trigger`
    asks; one pass at a time. A failing pass (database down, lock held by another run) is logged
    and recorded in :meth:`status`; the next pass tries again, so the server never dies of it."""

    def __init__(self, store: Any, embedder: Embedder, options: IngestOptions, *, every_s: float, lock_path: str | None,
                 summary_path: str | None, summary_fields: dict[str, Any], on_outcome: OutcomeObserver | None = None,
                 last_run_path: str | None = None) -> None:
        """``lock_path``: the run lock each pass takes (None: the caller holds it for the server's
        life); ``summary_path`` and ``last_run_path``: where each pass's summary goes."""
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        self.store, self.embedder, self.every_s = store, embedder, every_s
        self.options = replace(options, progress=False)  # no progress bar inside a server's log
        about = {k: summary_fields[k] for k in ("target", "location", "collection") if k in summary_fields}
        self.lock = RunLock(lock_path, command=SERVE_COMMAND, about=about) if lock_path else None
        self.summary_paths = {summary_path, last_run_path} - {None}
        self.summary_fields = summary_fields
        self.on_outcome = on_outcome
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running = False
        self._runs = 0
        self._last: dict[str, Any] | None = None
        self._next_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="clip-search-ingest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self) -> bool:
        """Ask for a pass now; False when one is already running (it will see new files next time)."""
        with self._lock:
            if self._running:
                return False
        self._wake.set()
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"every_s": self.every_s, "running": self._running, "runs": self._runs,
                    "next_in_s": None if self._running else round(max(0.0, self._next_at - time.monotonic()), 1),
                    "last": self._last}

    def close(self, timeout: float = 60.0) -> None:
        """Stop: a running pass saves what it embedded, releases the lock and ends (like Ctrl-C)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(max(0.0, self._next_at - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            with self._lock:
                self._running = True
            outcome, summary = self._run_once()
            with self._lock:
                self._running = False
                self._runs += 1
                self._last = summary
                self._next_at = time.monotonic() + self.every_s
            if self.on_outcome:
                self.on_outcome(outcome)

    def _run_once(self) -> tuple[str, dict[str, Any]]:
        stats = RunStats()
        try:
            if self.lock is not None:
                self.lock.acquire()
            try:
                stats = run_ingest(self.store, self.embedder, self.options, should_stop=self._stop.is_set)
            finally:
                if self.lock is not None:
                    self.lock.release()
        except IngestInterrupted as exc:
            return self._end(exc.stats, "interrupted", interrupted=True)
        except LockedError as exc:  # another run is updating the collection: skip this pass
            log.warning("scheduled ingestion skipped: %s", exc)
            return self._end(stats, "locked", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one failed pass must not end the server
            log.error("scheduled ingestion failed (the next pass tries again): %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return self._end(stats, "fatal", error=f"{type(exc).__name__}: {exc}")
        if stats.failed:
            log.warning("%d file(s) failed; see %s (they are retried on the next pass)", stats.failed, self.options.dead_letter)
        outcome = "failed_files" if stats.failed else "prune_refused" if stats.prune_refused else "ok"
        return self._end(stats, outcome, dead_letter=self.options.dead_letter)

    def _end(self, stats: RunStats, outcome: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        """The pass's outcome and summary (written where configured): the fields of a cron run's."""
        if stats.finished_at is None:
            stats.finish()
        wrote_dead_letter = outcome not in ("locked", "fatal")
        summary = {**stats.to_dict(**extra), "model_id": self.embedder.model_id, **self.summary_fields,
                   **outcome_fields(exit_code_of(outcome)),
                   **failed_files_fields(self.options.dead_letter if wrote_dead_letter else None)}
        for path in self.summary_paths:
            write_summary(path, summary)
        return outcome, summary


__all__ = ["ScheduledIngest"]
