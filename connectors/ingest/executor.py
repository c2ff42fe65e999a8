"""Where the read + decode stage runs: the interface of an executor and the local one.

An executor turns the planner's :class:`~.plan.Candidate` files into :class:`~.stages.Loaded`
or :class:`~.stages.Failed` results *in input order*, one per candidate. Everything else of a
run (the scan, the plan, batching new content for the model, the writer with its exactly-once
bookkeeping, prune, dead letters, the summary) stays in :func:`~.pipeline.run_ingest` on the
driver, so another executor (:class:`~.ray_executor.RayExecutor`) changes where work happens,
never what a run means. An executor may also embed: a result whose ``vector`` is set is written
as it is, the others are embedded on the driver.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from ..cpus import decode_workers
from .plan import Candidate
from .reader import DEFAULT_READ_TIMEOUT_S, TimedReader
from .stages import DecodeStage, Failed, Loaded

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``map`` over a pool with at most ``window`` items in flight, results in input order."""
    in_flight: deque = deque()
    for item in items:
        in_flight.append(pool.submit(fn, item))
        if len(in_flight) >= window:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


class StageExecutor(Protocol):
    """Runs ``decode`` over ``candidates``; closing the returned iterator early (Ctrl-C) must
    abandon the work in flight promptly."""

    def results(self, candidates: Iterable[Candidate], decode: DecodeStage) -> Iterator[Loaded | Failed]: ...


class LocalExecutor:
    """Decode threads on this machine (the default): Pillow's decoders, resizing and hashlib
    release the GIL, and threads avoid pickling every preprocessed tensor between processes.
    ``window`` decodes stay in flight, enough to fill the next batch while the model runs."""

    def __init__(self, workers: int | None = None, read_timeout: float = DEFAULT_READ_TIMEOUT_S, window: int = 64) -> None:
        self.workers = decode_workers(workers)  # None: sized to the CPUs (..cpus.thread_plan)
        self.read_timeout = read_timeout
        self.window = window

    def results(self, candidates: Iterable[Candidate], decode: DecodeStage) -> Iterator[Loaded | Failed]:
        reader = TimedReader(self.workers, self.read_timeout)
        stage = replace(decode, read=reader.read)
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clip-ingest-decode") as pool:
                try:
                    yield from ordered_map(pool, stage, candidates, window=self.window)
                except BaseException:  # stopped (Ctrl-C, SIGTERM, closed early): abandon the decodes in flight
                    pool.shutdown(wait=False, cancel_futures=True)
                    reader.abort()  # a worker waiting on a hung read returns now
                    raise
        finally:
            reader.close()


__all__ = ["LocalExecutor", "StageExecutor", "ordered_map"]
