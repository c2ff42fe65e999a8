"""The Ray Data executor: read + decode + hash on CPU actors, embedding on an actor pool.

``clip-ingest --executor ray`` runs the same :func:`~.pipeline.run_ingest` as a local run: the
driver scans, plans (unchanged files never leave it), batches and writes, so ids, payloads, the
skip of unchanged files, ``--prune``, dead letters and exactly-once writes are the local run's,
by construction. Only the middle moves onto the cluster, as a streaming Ray Data pipeline:

    from_items(candidates) -> map_batches(_decode_batch)  CPU tasks: read, hash, decode, preprocess
                           -> map_batches(_EmbedWorker)   actor pool, one model each (GPU or CPU)
                           -> iter_batches on the driver  -> the run's writer (batched, retried upserts)

Writes happen on the driver, not in a ``Datasink`` per block: one writer keeps the run's
bookkeeping (which path already joined which point, content seen twice) in one place, and a
retried or restarted Ray task can never write twice. The driver receives only ids, payload facts
and vectors (``dim`` floats per image), never pixels. Ray Data supplies back-pressure (bounded
object-store use per operator) and retries: a decode or embed worker that dies has its actor
restarted and its batch re-run, so a killed worker costs time, not images. Results come back in
input order (``preserve_order``), so a folder with two copies of one image gives the same
collection as a local run.

Departures from a local run: content that appears twice in one run is embedded by whichever
worker meets it (the second vector is dropped on the driver, so the collection is identical and
``embedded`` counts once); the listing of candidates is materialised on the driver before the
pipeline starts (it holds paths and sizes, not pixels).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..cpus import CPUS_ENV, cpu_budget
from ..embedder import Embedder
from ..pixels import Preparer
from .plan import Candidate
from .reader import DEFAULT_READ_TIMEOUT_S, TimedReader
from .executor_advice import executor_warning
from .metadata import MetadataLimits
from .stages import DecodeStage, Failed, ImageEncoder, Loaded
from .state import StoredState

log = logging.getLogger("clip_ingest.ingest")

EmbedderFactory = Callable[..., Embedder]
"""Builds the run's embedder inside an embed actor, called with ``device=``. Must pickle: a
``functools.partial`` of a module-level function. Decode tasks never load the model: they get
the embedder's :class:`~..pixels.Preparer`."""


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-d object array of ``items`` (``np.array`` would try to nest sequences)."""
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


BATCHES_PER_BLOCK = 8
"""Model batches per Ray Data block: a block is one task, whose scheduling and transfer cost is
paid per block, not per image."""

_STATES: dict[str, StoredState] = {}
"""The run's stored state, fetched once per Ray worker process (ids of every point: large)."""


def _decode_batch(batch: dict[str, np.ndarray], *, preparer: Preparer | None, collection: str, state: Any,
                  decode: bool, read_timeout: float, metadata_limits: MetadataLimits) -> dict[str, np.ndarray]:
    """A Ray task of the decode stage: the pipeline's own :class:`DecodeStage`, without the model."""
    import ray

    key = state.hex()
    if key not in _STATES:
        _STATES.clear()  # a worker process serves one run at a time
        _STATES[key] = ray.get(state)
    reader = TimedReader(1, read_timeout)
    try:
        stage = DecodeStage(ImageEncoder(None, preparer), collection, _STATES[key], decode=decode, read=reader.read,
                            metadata_limits=metadata_limits)
        return {"item": _objects([_without_image(stage(candidate)) for candidate in batch["item"]])}
    finally:
        reader.close()


def _without_image(result: Loaded | Failed) -> Loaded | Failed:
    """``result`` without its decoded image, now turned into model input: the driver needs the
    image's size and format only, and every image sent back would cross the object store pickled
    (about as many bytes as its pixels)."""
    if isinstance(result, Loaded) and result.decoded is not None and result.decoded.image is not None:
        result.decoded = replace(result.decoded, image=None)
    return result


class _EmbedWorker:
    """One Ray actor of the embed stage: embeds the new content of a batch, drops its pixels."""

    def __init__(self, factory: EmbedderFactory, device: str | None, threads: int | None) -> None:
        if threads:  # the model's threads sized to the actor's CPUs, not the node's (..cpus.thread_plan reads it)
            os.environ[CPUS_ENV] = str(threads)
        self.encoder = ImageEncoder(factory(device=device))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(batch["item"])
        todo = [item for item in items if isinstance(item, Loaded) and item.pixels is not None and not item.known]
        if todo:
            for item, vector in zip(todo, self.encoder.embed([item.pixels for item in todo])):
                item.vector = np.asarray(vector, dtype=np.float32)
                item.pixels = None
        return {"item": _objects(items)}


@dataclass(frozen=True)
class RayExecutor:
    """Runs the decode and embed stages of a run as a Ray Data pipeline (see the module doc).

    ``address``: the Ray cluster (``None``: ``RAY_ADDRESS`` if set, else a local Ray instance
    started for this process). ``embed_workers`` actors embed, each with ``num_gpus_per_worker``
    GPUs (a fraction shares one) or ``num_cpus_per_worker`` CPUs and as many model threads (torch
    or ONNX Runtime; default: as many actors as the cluster's GPUs or CPUs hold). Decode tasks
    take 1 CPU each; on a CPU-only cluster Ray fuses them into the embed actors (same resources), so each actor
    decodes and embeds its own blocks, one process per core, no GIL shared. ``device`` is the
    embed actors' device (default: ``cuda`` with GPUs, else CPU).
    """

    factory: EmbedderFactory
    address: str | None = None
    embed_workers: int | None = None
    num_gpus_per_worker: float = 0.0
    num_cpus_per_worker: float = 1.0
    batch_size: int = 32
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    device: str | None = None
    progress: bool = False

    def _start(self) -> Any:
        import ray

        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            # a Ray instance started here runs its workers at the driver's priority: Ray's default
            # (nice 15) lets every neighbour of a shared machine starve the embed actors
            own = {} if address else {"_system_config": {"worker_niceness": 0}}
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False, **own)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the local run's order: same points, same paths
        context.enable_progress_bars = self.progress
        context.print_on_execution_start = False
        return ray

    def results(self, candidates: Iterable[Candidate], decode: DecodeStage) -> Iterator[Loaded | Failed]:
        items = list(candidates)  # the planner's filtered listing: only files that must be read
        if not items:
            return
        gpu = self.num_gpus_per_worker > 0
        cluster = bool(self.address or os.environ.get("RAY_ADDRESS")) or gpu
        warning = executor_warning("ray", len(items), cpu_budget(), cluster=cluster)
        if warning:
            log.warning(warning)
        ray = self._start()
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        actors = self.embed_workers or max(1, int(resources.get("GPU", 0) / self.num_gpus_per_worker if gpu
                                                  else cpus / self.num_cpus_per_worker))
        # blocks of several model batches, and enough of them to keep every CPU busy
        blocks = max(min(4 * cpus, len(items)), -(-len(items) // (BATCHES_PER_BLOCK * self.batch_size)))
        dataset = ray.data.from_items([{"item": c} for c in items], override_num_blocks=blocks)
        dataset = dataset.map_batches(
            _decode_batch, batch_format="numpy", batch_size=self.batch_size, num_cpus=1,
            fn_kwargs={"preparer": decode.encoder.preparer, "collection": decode.collection,
                       "state": ray.put(decode.state), "decode": decode.decode, "read_timeout": self.read_timeout,
                       "metadata_limits": decode.metadata_limits},
        )
        if decode.decode:
            device = self.device or ("cuda" if gpu else "cpu")
            dataset = dataset.map_batches(
                _EmbedWorker, batch_format="numpy", batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=self.num_gpus_per_worker or None, num_cpus=None if gpu else self.num_cpus_per_worker,
                fn_constructor_kwargs={"factory": self.factory, "device": device,
                                       "threads": None if gpu else max(1, int(self.num_cpus_per_worker))},
            )
        log.info("ray: %d files to read on %d CPUs, %d embed workers", len(items), cpus, actors)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            yield from batch["item"]


__all__ = ["EmbedderFactory", "RayExecutor"]
