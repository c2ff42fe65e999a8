"""Every executor ``--executor`` can name: its name, what it is, and how a run's settings build it.

Each entry describes itself (the ``--executor`` help is made of the descriptions) and builds
its executor from the run's settings, so a new executor is one module plus one entry here. The
pipeline's default, :class:`~.executor.LocalExecutor` sized by ``options.workers``, is what
``local`` stands for: its factory returns None.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..config import Settings
from ..cpus import decode_workers
from ..embedder import Embedder
from .executor import StageExecutor

if TYPE_CHECKING:  # the Ray executor is imported when chosen
    from .ray_executor import EmbedderFactory


class ExecutorUnavailable(ValueError):
    """The executor cannot run this job (a missing extra, a model it cannot carry): a usage error."""


@dataclass(frozen=True)
class ExecutorKind:
    """One ``--executor`` choice. ``build(settings, embedder, rebuild)`` returns the executor of a
    run (None: the pipeline's default threads); ``rebuild`` makes the model again where it runs."""

    name: str
    description: str
    build: Callable[[Settings, Embedder, EmbedderFactory], StageExecutor | None]


def _local(settings: Settings, embedder: Embedder, rebuild: EmbedderFactory) -> None:
    return None


def _processes(settings: Settings, embedder: Embedder, rebuild: EmbedderFactory) -> StageExecutor:
    if getattr(embedder, "preparer", None) is None:
        raise ExecutorUnavailable("--executor processes needs an open_clip or ONNX model (its input path runs in the "
                                  "worker processes); use --executor local")
    from .process_executor import ProcessExecutor  # multiprocessing and shared memory: only when chosen

    return ProcessExecutor(workers=decode_workers(settings.workers, settings.get("cpus")), read_timeout=settings.read_timeout)


def _ray(settings: Settings, embedder: Embedder, rebuild: EmbedderFactory) -> StageExecutor:
    if importlib.util.find_spec("ray") is None:
        raise ExecutorUnavailable("--executor ray needs Ray Data: pip install 'clip-ingest[ray]'")
    from .ray_executor import RayExecutor

    return RayExecutor(rebuild, address=settings.ray_address, embed_workers=settings.ray_workers,
                       num_gpus_per_worker=settings.num_gpus_per_worker, num_cpus_per_worker=settings.num_cpus_per_worker,
                       batch_size=settings.batch_size, read_timeout=settings.read_timeout,
                       device=None if settings.device in (None, "auto") else settings.device,
                       progress=bool(sys.stderr.isatty()))


#: name -> executor, in the order ``--executor``'s help lists them
EXECUTORS: dict[str, ExecutorKind] = {kind.name: kind for kind in (
    ExecutorKind("local", "decode threads on this machine", _local),
    ExecutorKind("processes", "--workers decode processes on this machine (faster where decoding is the bound: small "
                 "models on a CPU)", _processes),
    ExecutorKind("ray", "a Ray Data pipeline on a Ray cluster (extra `ray`)", _ray),
)}


def describe_executors() -> str:
    """``a, b, or c``: every executor's description, for the ``--executor`` help."""
    *first, last = (kind.description for kind in EXECUTORS.values())
    return f"{', '.join(first)}, or {last}"


def make_executor(settings: Settings, embedder: Embedder, rebuild: EmbedderFactory) -> StageExecutor | None:
    """The executor ``settings.executor`` names, built for ``embedder`` (None: the default threads).

    Raises:
        ExecutorUnavailable: it cannot run here or with this model.
    """
    try:
        kind = EXECUTORS[settings.get("executor") or "local"]
    except KeyError:
        raise ExecutorUnavailable(f"unknown executor {settings.executor!r}; choose one of {', '.join(EXECUTORS)}") from None
    return kind.build(settings, embedder, rebuild)


def rebuild_factory(load: Callable[..., Embedder], settings: Settings, model: str) -> EmbedderFactory:
    """``load`` (a module-level function, so the result pickles) bound to the run's model, runtime,
    quantization and batch size: how a remote worker makes the same model."""
    return functools.partial(load, model, runtime=settings.runtime, quantize=settings.quantize,
                             batch_size=settings.batch_size)


__all__ = ["EXECUTORS", "ExecutorKind", "ExecutorUnavailable", "describe_executors", "make_executor",
           "rebuild_factory"]
