"""Running an ingestion job: :func:`run_job` runs an :class:`~.job.IngestJob` once under its lock
and returns its :class:`Outcome`, having recorded the run's summary, whatever its end.

The callers map the outcome, never re-decide it: ``clip-ingest`` (and ``migrate``) to the exit
code and what it prints, ``clip-search serve --ingest-every`` to ``/v1/info`` and its
``/metrics`` counter. So the lock, the stop on SIGTERM, the outcome words and exit codes
(:data:`~.summary.OUTCOMES`) and the summary (``--summary``, the last-run file,
``--metrics-file``) are decided here once.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..backends.base import InvalidSettingError, ModelMismatchError, StoreError
from ..embedder import Embedder
from ..model_spec import ModelLoadError
from ..sink import Sink
from ..targets import holds
from .artifact import NotAnArtifact, load_artifact, open_artifact, recorded_spec
from .executor import StageExecutor
from .executor_registry import ExecutorUnavailable
from .job import IngestJob, missing_sources
from .lock import LockedError, LockHolder, refusal, store_holder
from .pipeline import IngestInterrupted, run_ingest
from .quarantine import QuarantineError
from .scan import ManifestError
from .summary import RunStats, exit_code_of, failed_files_fields, outcome_fields
from .writer import ChangeSink

log = logging.getLogger("clip_ingest.ingest")

#: errors that end a run as a usage error (exit 2): a bad source, setting or choice
USAGE_ERRORS = (FileNotFoundError, ManifestError, InvalidSettingError, QuarantineError, ExecutorUnavailable, NotAnArtifact)
#: errors that end a run with an outcome (the rest propagate: a bug shows its traceback)
RUN_ERRORS = (LockedError, StoreError, ModelLoadError, *USAGE_ERRORS)

ModelLoader = Callable[[], Embedder]
"""Loads the run's model, once the run holds its lock (a refused run loads nothing)."""

ExecutorChoice = Callable[[Embedder], "StageExecutor | None"]
"""The executor of a run, for its loaded model (None: the pipeline's default threads)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its outcome word and exit code (:data:`~.summary.OUTCOMES`), its counters,
    the summary it recorded (with the first failed files), and, for a run that did not finish, why."""

    word: str
    exit_code: int
    stats: RunStats
    summary: dict[str, Any]
    error: str | None = None


def finished_outcome(stats: RunStats, *, failed_files_ok: bool = False) -> tuple[int, str]:
    """The exit code and outcome word of a run that went to its end: 3 ``failed_files`` when
    files failed; else 5 ``prune_refused`` when ``--prune`` was refused (never hidden: a retry
    refuses again, a person must look); else 0. With ``failed_files_ok`` failed files exit 0 (a
    finished run for a scheduler that retries any non-zero exit) and keep the word ``failed_files``."""
    if stats.failed and not failed_files_ok:
        return exit_code_of("failed_files"), "failed_files"
    if stats.prune_refused:
        return exit_code_of("prune_refused"), "prune_refused"
    return exit_code_of("ok"), "failed_files" if stats.failed else "ok"


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While open, SIGTERM stops a run like Ctrl-C (it saves what it embedded and releases its
    lock); the list yielded records the signals received. Outside the main thread (a server's
    scheduled pass, stopped by ``should_stop``) nothing is installed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """One run of a job: what it loaded (for the summary) and how each end is recorded."""

    def __init__(self, job: IngestJob, model_id: str | None = None) -> None:
        self.job = job
        self.model_id = model_id

    def end(self, code: int, stats: RunStats | None = None, *, error: str | None = None, listed_from: str | None = None,
            **extra: Any) -> Outcome:
        """Record the summary of a run that ends with ``code`` and return its outcome."""
        if stats is None:
            stats = RunStats()
        if stats.finished_at is None:
            stats.finish()
        fields = {**self.job.summary_fields(), **outcome_fields(code), **failed_files_fields(listed_from), **extra}
        if error is not None:
            fields["error"] = error
        summary = stats.to_dict(model_id=self.model_id, **fields)
        self.job.record(summary)
        return Outcome(fields["outcome"], code, stats, summary, error)

    def execute(self, model: ModelLoader, store: Sink | None, executor: ExecutorChoice | None,
                on_change: ChangeSink | None, should_stop: Callable[[], bool] | None) -> RunStats:
        """Take the lock, load what the run needs, open the store (unless given) and run."""
        job = self.job
        with job.run_lock():
            if job.artifact:
                artifact = open_artifact(job.artifact)
                self.model_id = recorded_spec(artifact).model_id
                with self._store(store) as opened:
                    return load_artifact(opened, artifact, job.options)
            embedder = model()
            self.model_id = embedder.model_id
            chosen = executor(embedder) if executor is not None else None
            with self._store(store) as opened:
                return run_ingest(opened, embedder, job.options, on_change=on_change, executor=chosen,
                                  should_stop=should_stop)

    def _store(self, given: Sink | None) -> AbstractContextManager[Sink]:
        """What the run writes: the caller's store (left open), else the job's, closed after the run."""
        return nullcontext(given) if given is not None else self.job.open_sink()

    def failure(self, exc: Exception) -> Outcome:
        """The outcome of a run stopped by ``exc``, one of :data:`RUN_ERRORS`."""
        if isinstance(exc, LockedError):
            return self.end(exit_code_of("locked"), error=str(exc))
        if isinstance(exc, USAGE_ERRORS):
            return self.end(exit_code_of("usage"), error=str(exc))
        if isinstance(exc, ModelMismatchError):
            advice = (f"The artifact holds vectors of {self.model_id!r}; load it into a collection of that model."
                      if self.job.artifact else
                      "To move the collection to the new model while it keeps serving, run `clip-ingest migrate` with "
                      "the new --model; --recreate re-embeds in place (an outage); or choose another --collection.")
            return self.end(exit_code_of("fatal"), error=f"{exc}\n{advice}")
        holder = self._store_holder() if isinstance(exc, StoreError) else None
        if holder is not None:  # the store's own lock: name the process that keeps it open
            where = f"{self.job.target.target} store {self.job.target.location}"
            return self.end(exit_code_of("locked"), error=refusal(holder, where), store_error=str(exc))
        return self.end(exit_code_of("fatal"), error=str(exc))  # the store failed, or the model does not load

    def interrupted(self, saved: RunStats | None, signals: list[int]) -> Outcome:
        """The outcome of a run stopped by Ctrl-C, SIGTERM or ``should_stop``: what it saved."""
        done = ("nothing written yet" if saved is None else
                f"saved {saved.new} new, {saved.updated} updated, {saved.moved} moved ({saved.embedded} embedded)")
        message = (f"interrupted by {'SIGTERM' if signals else 'Ctrl-C'}: {done}; the lock is released and running the "
                   "same command again resumes where this run stopped")
        code = 128 + signal.SIGTERM if signals else exit_code_of("interrupted")
        return self.end(code, saved, error=message, listed_from=self.job.dead_letter, interrupted=True)

    def finished(self, stats: RunStats) -> Outcome:
        code, word = finished_outcome(stats, failed_files_ok=self.job.failed_files_ok)
        if stats.failed:
            log.warning("%d file(s) failed; see %s (they are retried on the next run; `clip-ingest quarantine "
                        "--failed` acknowledges files that will never decode)", stats.failed, self.job.dead_letter)
        return self.end(code, stats, listed_from=self.job.dead_letter, dead_letter=self.job.dead_letter, outcome=word)

    def _store_holder(self) -> LockHolder | None:
        """The process (``clip-search serve``) that keeps this embedded store open, if any: the
        collection, or the whole location for a backend that holds it whole (a Milvus Lite file)."""
        target = self.job.target
        if not target.embedded:
            return None
        whole = holds(target.target) == "location"
        return store_holder(target.target, target.location, None if whole else self.job.options.collection)


def run_job(job: IngestJob, model: ModelLoader, *, store: Sink | None = None, executor: ExecutorChoice | None = None,
            on_change: ChangeSink | None = None, should_stop: Callable[[], bool] | None = None) -> Outcome:
    """Run ``job`` once and record its summary, whatever its end.

    Sources that do not exist end the run before the lock and the model (a typo is reported at
    once). Then, under the job's lock: ``model()`` loads the model (an artifact needs none),
    ``executor`` picks where decoding runs, and ``store`` (default: the job's, opened and closed
    here) receives the points. A refused or failed run returns its outcome (``locked``, ``usage``,
    ``fatal``, ``interrupted``) with the reason in ``error``; an unexpected error propagates.
    """
    run = _Run(job)
    try:
        missing = missing_sources(job.options)
    except ValueError as exc:  # credentials in an object-store URI
        return run.end(exit_code_of("usage"), error=str(exc))
    except OSError as exc:
        return run.end(exit_code_of("fatal"), error=str(exc))
    if missing:
        return run.end(exit_code_of("usage"), error=f"not found: {', '.join(missing)} (sources are folders, --manifest takes files)")
    with sigterm_as_interrupt() as signals:
        try:
            stats = run.execute(model, store, executor, on_change, should_stop)
        except (IngestInterrupted, KeyboardInterrupt) as exc:
            return run.interrupted(exc.stats if isinstance(exc, IngestInterrupted) else None, signals)
        except RUN_ERRORS as exc:
            return run.failure(exc)
    return run.finished(stats)

def crashed(job: IngestJob, exc: BaseException, *, model_id: str | None = None) -> Outcome:
    """Record the ``fatal`` outcome of a run that ``exc``, an error :func:`run_job` lets through,
    ended: for a caller that must go on (a server's scheduled passes)."""
    return _Run(job, model_id).end(exit_code_of("fatal"), error=f"{type(exc).__name__}: {exc}")


__all__ = ["RUN_ERRORS", "USAGE_ERRORS", "ExecutorChoice", "ModelLoader", "Outcome", "crashed", "finished_outcome",
           "run_job", "sigterm_as_interrupt"]
