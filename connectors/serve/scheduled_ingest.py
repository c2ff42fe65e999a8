"""Incremental ingestion inside ``clip-search serve`` (``--ingest-every``), for the embedded stores.

An embedded store (Qdrant local / Edge, Milvus Lite) can be open in one process only, so a cron
``clip-ingest`` cannot update the collection a server holds open. Instead the server runs the
same :func:`~clip_ingest.connectors.ingest.pipeline.run_ingest` itself, in one background thread,
through the server's own (serialised) store handle: the same run lock, dead-letter file, JSON
summary and exit semantics as a cron run, and searches keep being answered between write batches.
Nothing here is a second copy of the ingestion semantics.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ..embedder import Embedder
from ..ingest.lock import LockedError, RunLock
from ..ingest.pipeline import IngestInterrupted, IngestOptions, run_ingest
from ..ingest.summary import write_summary

log = logging.getLogger("clip_ingest.serve")

#: called after each pass with its outcome ("ok", "failed_files", "interrupted", "locked", "error")
OutcomeObserver = Callable[[str], None]


class ScheduledIngest:
    """Run ``options``' ingestion now, then every ``every_s`` seconds, and whenever :meth:`trigger`
    asks; one pass at a time. A failing pass (database down, lock held by another run) is logged
    and recorded in :meth:`status`; the next pass tries again, so the server never dies of it."""

    def __init__(self, store: Any, embedder: Embedder, options: IngestOptions, *, every_s: float, lock_path: str,
                 summary_path: str | None, summary_fields: dict[str, Any], on_outcome: OutcomeObserver | None = None) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        self.store, self.embedder, self.every_s = store, embedder, every_s
        self.options = replace(options, progress=False)  # no progress bar inside a server's log
        self.lock_path, self.summary_path, self.summary_fields = lock_path, summary_path, summary_fields
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
        started = time.time()
        try:
            with RunLock(self.lock_path):
                try:
                    stats = run_ingest(self.store, self.embedder, self.options, should_stop=self._stop.is_set)
                except IngestInterrupted as exc:
                    return "interrupted", self._summarise(exc.stats.to_dict(interrupted=True), "interrupted")
        except LockedError as exc:  # another run is updating the collection: skip this pass
            log.warning("scheduled ingestion skipped: %s", exc)
            return "locked", {"outcome": "locked", "error": str(exc), "started_at": started}
        except Exception as exc:  # noqa: BLE001 - one failed pass must not end the server
            log.error("scheduled ingestion failed (the next pass tries again): %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return "error", {"outcome": "error", "error": f"{type(exc).__name__}: {exc}", "started_at": started}
        outcome = "failed_files" if stats.failed else "ok"
        if stats.failed:
            log.warning("%d file(s) failed; see %s (they are retried on the next pass)", stats.failed, self.options.dead_letter)
        return outcome, self._summarise(stats.to_dict(dead_letter=self.options.dead_letter), outcome)

    def _summarise(self, data: dict[str, Any], outcome: str) -> dict[str, Any]:
        summary = {**data, "model_id": self.embedder.model_id, **self.summary_fields, "outcome": outcome}
        if self.summary_path:
            write_summary(self.summary_path, summary)
        return summary


__all__ = ["ScheduledIngest"]
