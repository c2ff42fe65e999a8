"""Decode in worker processes: the local executor's stage, without one GIL for all of it.

``clip-ingest --executor processes`` runs the pipeline's own :class:`~.stages.DecodeStage`
(read with a timeout, hash, decode, preprocess) in ``workers`` processes, so the Python work per
file (reading, hashing, the hand-off) no longer shares one interpreter lock with the model and
the writer. What bounds a small model's ingestion on a CPU is that stage (see
``benchmarks/README.md``, *Decode*); for a large model the model is the bound and the default
threads are as fast and start at once.

Each worker is started once per run (``spawn``: no copy of the driver's threads or model) with
the embedder's :class:`~..pixels.Preparer` and the stored state; it never loads the model.
Candidates travel in chunks and come back in input order. The pixels do not cross the pipe: the
driver owns one shared-memory block per task in flight, the worker writes its chunk's model
inputs there and sends back only where each lies, and the driver copies the block out in one
pass (at 224 px an input is 600 KB, which pickled through a pipe cost more than the decode
saved). Where shared memory is short (a container's 64 MB ``/dev/shm``) the pixels travel
pickled, as before. The decoded image itself stays in the worker: the driver needs only its
size and format. Ids, payloads, skips, dead letters and the writer stay on the driver, as for
every executor. A stop (Ctrl-C, SIGTERM, the iterator closed early) cancels what is queued and
ends the workers at once, a worker stuck in a read included; the blocks are unlinked.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Iterable, Iterator

import numpy as np

from ..cpus import cpu_budget
from ..pixels import Preparer
from .executor import ordered_map
from .executor_advice import stream_warning
from .plan import Candidate
from .reader import DEFAULT_READ_TIMEOUT_S, TimedReader
from .metadata import MetadataLimits
from .stages import DecodeStage, Failed, ImageEncoder, Loaded
from .state import StoredState

log = logging.getLogger(__name__)

_STAGE: DecodeStage | None = None
"""The decode stage of the run this worker process serves (set by :func:`_start_worker`)."""
_BLOCKS: dict[str, SharedMemory] = {}
"""The driver's shared-memory blocks this worker has attached (once each)."""

Layout = list[tuple[int, int, int, tuple[int, ...], str]]
"""Per input placed in a block: (index in the chunk, byte offset, byte size, shape, dtype)."""


def _start_worker(preparer: Preparer, collection: str, state: StoredState, decode: bool, read_timeout: float,
                  metadata_limits: MetadataLimits) -> None:
    global _STAGE
    # one intra-op thread per process (the processes are the parallelism), for a transform that
    # brought torch in while the arguments unpickled; the numpy input path never imports it (an
    # import would cost each worker seconds of start-up)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    reader = TimedReader(1, read_timeout)
    _STAGE = DecodeStage(ImageEncoder(None, preparer), collection, state, decode=decode, read=reader.read,
                         metadata_limits=metadata_limits)


def _decode_chunk(task: tuple[list[Candidate], str | None]) -> tuple[list[Loaded | Failed], str | None, Layout]:
    """Decode a chunk; its model inputs go into the block named in ``task`` while they fit."""
    assert _STAGE is not None, "worker not started"
    candidates, block = task
    results = [_STAGE(candidate) for candidate in candidates]
    for item in results:
        if isinstance(item, Loaded) and item.decoded is not None:
            item.decoded = replace(item.decoded, image=None)  # the driver needs its size and format only
    layout: Layout = []
    if block is None:
        return results, block, layout
    memory = _BLOCKS.get(block)
    if memory is None:
        memory = _BLOCKS[block] = SharedMemory(block)
    offset = 0
    for index, item in enumerate(results):
        pixels = item.pixels if isinstance(item, Loaded) else None
        if not isinstance(pixels, np.ndarray):
            continue
        if offset + pixels.nbytes > memory.size:
            break  # the rest travel pickled
        target = np.ndarray(pixels.shape, pixels.dtype, buffer=memory.buf, offset=offset)
        target[...] = pixels
        del target  # no export of the buffer may outlive the write
        layout.append((index, offset, pixels.nbytes, pixels.shape, pixels.dtype.str))
        item.pixels = None
        offset += pixels.nbytes
    return results, block, layout


class _Blocks:
    """The driver's shared-memory blocks, one per task in flight, each ``size`` bytes."""

    def __init__(self, count: int, size: int) -> None:
        self.memory: dict[str, SharedMemory] = {}
        try:
            for _ in range(count):
                block = SharedMemory(create=True, size=size)
                self.memory[block.name] = block
        except BaseException:
            self.close()
            raise
        self.free = deque(self.memory)

    @classmethod
    def for_run(cls, count: int, size: int) -> _Blocks | None:
        """Blocks for a run, or None (pixels then travel pickled) where shared memory is short."""
        try:
            available = shutil.disk_usage("/dev/shm").free
        except OSError:  # no /dev/shm (macOS): POSIX shared memory lives elsewhere
            available = None
        if available is not None and available < 2 * count * size:
            log.warning("shared memory is short (%d MB free in /dev/shm, %d MB wanted): decode workers send pixels "
                        "through pipes, which is slower at large input sizes", available >> 20, 2 * count * size >> 20)
            return None
        try:
            return cls(count, size)
        except OSError as exc:
            log.warning("no shared memory for the decode workers (%s): pixels travel through pipes", exc)
            return None

    def take(self) -> str:
        return self.free.popleft()

    def unpack(self, name: str, results: list[Loaded | Failed], layout: Layout) -> None:
        """Copy the inputs out of block ``name`` (one pass) into ``results``, and free the block."""
        if layout:
            _, last_offset, last_size, _, _ = layout[-1]
            data = np.frombuffer(self.memory[name].buf, np.uint8, count=last_offset + last_size).copy()
            for index, offset, size, shape, dtype in layout:
                results[index].pixels = data[offset:offset + size].view(dtype).reshape(shape)  # type: ignore[union-attr]
        self.free.append(name)

    def close(self) -> None:
        for block in self.memory.values():
            block.close()
            block.unlink()
        self.memory.clear()


def _chunks(items: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class ProcessExecutor:
    """The decode stage in ``workers`` processes, ``chunk`` files per task, ``2 * workers`` tasks
    in flight (enough to fill the next model batch while the model runs), each with a
    shared-memory block for its chunk's model inputs."""

    workers: int = 2
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    chunk: int = 64

    def results(self, candidates: Iterable[Candidate], decode: DecodeStage) -> Iterator[Loaded | Failed]:
        preparer = decode.encoder.preparer
        if preparer is None:
            raise ValueError("--executor processes needs an embedder whose input path pickles "
                             "(open_clip and ONNX models have one); use --executor local")
        warning, candidates = stream_warning("processes", candidates, cpu_budget())
        if warning:
            log.warning(warning)
        # the workers' preparer builds numpy inputs; a torch model gets them back as tensors
        to_tensor = None
        if not preparer.as_numpy:
            import torch

            to_tensor = torch.from_numpy
        window = 2 * self.workers
        blocks = _Blocks.for_run(window, self.chunk * 3 * preparer.image_size ** 2 * 4) if decode.decode else None
        tasks = ((chunk, blocks.take() if blocks else None) for chunk in _chunks(candidates, self.chunk))
        try:
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_worker,
                                       initargs=(replace(preparer, as_numpy=True), decode.collection, decode.state,
                                                 decode.decode, self.read_timeout, decode.metadata_limits))
            try:
                # ordered_map asks for the next task only after this loop took the previous
                # result, so a block is free again (unpacked) whenever the next task needs one
                for results, block, layout in ordered_map(pool, _decode_chunk, tasks, window=window):
                    if blocks is not None and block is not None:
                        blocks.unpack(block, results, layout)
                    for item in results:
                        if to_tensor is not None and isinstance(item, Loaded) and item.pixels is not None:
                            item.pixels = to_tensor(item.pixels)
                        yield item
            except BaseException:  # stopped: nothing queued runs, and a worker stuck in a read is ended
                _terminate(pool)
                raise
            else:
                pool.shutdown(wait=True)
        finally:
            if blocks is not None:
                blocks.close()


def _terminate(pool: ProcessPoolExecutor) -> None:
    processes: dict[Any, Any] = dict(getattr(pool, "_processes", None) or {})  # no public handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        process.join(5)


__all__ = ["ProcessExecutor"]
