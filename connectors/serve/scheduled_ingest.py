"""Incremental ingestion inside ``clip-search serve`` (``--ingest-every``), for the embedded stores.

An embedded store (Qdrant local / Edge, Milvus Lite) can be open in one process only, so a cron
``clip-ingest`` cannot update the collection a server holds open. Instead the server runs the
same job, :func:`~clip_ingest.connectors.ingest.runner.run_job`, itself, in one background thread,
through the server's own (serialised) store handle: the same run lock, dead-letter file, JSON
summary, outcome words and exit codes as a cron run, and searches keep being answered between
write batches. Nothing here is a second copy of the ingestion semantics.

The run lock: on an embedded store the server holds it for as long as it serves (so a cron
``clip-ingest`` is refused with a message naming the server) and passes run under it (the job's
``lock_path`` is None); on a database server each pass takes it, as a cron run would.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ..embedder import Embedder
from ..ingest.job import IngestJob
from ..ingest.runner import Outcome, crashed, run_job
from ..ingest.lock import SERVE_COMMAND

log = logging.getLogger("clip_ingest.serve")

#: called after each pass with its outcome word (:data:`~..ingest.summary.OUTCOMES`: ok, failed_files,
#: interrupted, locked, fatal...)
OutcomeObserver = Callable[[str], None]


class ScheduledIngest:
    """Run ``job`` now, then every ``every_s`` seconds, and whenever :meth:`trigger` asks; one pass
    at a time. A failing pass (database down, lock held by another run) is logged and recorded in
    :meth:`status`; the next pass tries again, so the server never dies of it."""

    def __init__(self, store: Any, embedder: Embedder, job: IngestJob, *, every_s: float,
                 on_outcome: OutcomeObserver | None = None) -> None:
        """``job``: what each pass runs, with ``clip-search serve`` as the holder of its lock (None:
        the caller holds it for the server's life) and no progress bar inside a server's log."""
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        self.store, self.embedder, self.every_s = store, embedder, every_s
        self.job = replace(job, command=SERVE_COMMAND, options=replace(job.options, progress=False))
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
            outcome = self._run_once()
            with self._lock:
                self._running = False
                self._runs += 1
                self._last = outcome.summary
                self._next_at = time.monotonic() + self.every_s
            if self.on_outcome:
                self.on_outcome(outcome.word)

    def _run_once(self) -> Outcome:
        try:
            outcome = run_job(self.job, lambda: self.embedder, store=self.store, should_stop=self._stop.is_set)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not end the server
            log.error("scheduled ingestion failed (the next pass tries again): %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return crashed(self.job, exc, model_id=self.embedder.model_id)
        if outcome.error is not None:
            log.warning("scheduled ingestion %s (the next pass tries again): %s", outcome.word, outcome.error)
        return outcome


__all__ = ["ScheduledIngest"]
