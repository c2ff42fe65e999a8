"""Decode in worker processes: the local executor's stage, without one GIL for all of it.

``clip-ingest --executor processes`` runs the pipeline's own :class:`~.stages.DecodeStage`
(read with a timeout, hash, decode, preprocess) in ``workers`` processes, so the Python work per
file (reading, hashing, the hand-off) no longer shares one interpreter lock with the model and
the writer. What bounds a small model's ingestion on a CPU is that stage (see
``benchmarks/README.md``, *Decode*); for a large model the model is the bound and the default
threads are as fast and start at once.

Each worker is started once per run (``spawn``: no copy of the driver's threads or model) with
the embedder's :class:`~..preprocess.Preparer` and the stored state; it never loads the model.
Candidates travel in chunks and come back in input order; pixels come back as numpy arrays (one
buffer each, no per-tensor shared-memory handles) and are turned back into tensors for a torch
model without a copy. Ids, payloads, skips, dead letters and the writer stay on the driver, as
for every executor. A stop (Ctrl-C, SIGTERM, the iterator closed early) cancels what is queued
and ends the workers at once, a worker stuck in a read included.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any, Iterable, Iterator

from ..preprocess import Preparer
from .executor import ordered_map
from .plan import Candidate
from .reader import DEFAULT_READ_TIMEOUT_S, TimedReader
from .stages import DecodeStage, Failed, ImageEncoder, Loaded
from .state import StoredState

_STAGE: DecodeStage | None = None
"""The decode stage of the run this worker process serves (set by :func:`_start_worker`)."""


def _start_worker(preparer: Preparer, collection: str, state: StoredState, decode: bool, read_timeout: float) -> None:
    global _STAGE
    try:  # one intra-op thread per process: the processes are the parallelism
        import torch

        torch.set_num_threads(1)
    except ImportError:  # an ONNX-only install
        pass
    reader = TimedReader(1, read_timeout)
    _STAGE = DecodeStage(ImageEncoder(None, preparer), collection, state, decode=decode, read=reader.read)


def _decode_chunk(candidates: list[Candidate]) -> list[Loaded | Failed]:
    assert _STAGE is not None, "worker not started"
    return [_STAGE(candidate) for candidate in candidates]


def _chunks(items: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class ProcessExecutor:
    """The decode stage in ``workers`` processes, ``chunk`` files per task, ``2 * workers`` tasks
    in flight (enough to fill the next model batch while the model runs)."""

    workers: int = 2
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    chunk: int = 64

    def results(self, candidates: Iterable[Candidate], decode: DecodeStage) -> Iterator[Loaded | Failed]:
        preparer = decode.encoder.preparer
        if preparer is None:
            raise ValueError("--executor processes needs an embedder whose input path pickles "
                             "(open_clip and ONNX models have one); use --executor local")
        # the workers' preparer builds numpy inputs; a torch model gets them back as tensors
        to_tensor = None
        if not preparer.as_numpy:
            import torch

            to_tensor = torch.from_numpy
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                   initargs=(replace(preparer, as_numpy=True), decode.collection, decode.state,
                                             decode.decode, self.read_timeout))
        try:
            for chunk in ordered_map(pool, _decode_chunk, _chunks(candidates, self.chunk), window=2 * self.workers):
                for item in chunk:
                    if to_tensor is not None and isinstance(item, Loaded) and item.pixels is not None:
                        item.pixels = to_tensor(item.pixels)
                    yield item
        except BaseException:  # stopped: nothing queued runs, and a worker stuck in a read is ended
            _terminate(pool)
            raise
        else:
            pool.shutdown(wait=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    processes: dict[Any, Any] = dict(getattr(pool, "_processes", None) or {})  # no public handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        process.join(5)


__all__ = ["ProcessExecutor"]
