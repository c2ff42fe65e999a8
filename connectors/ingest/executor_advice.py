"""Whether ``--executor processes`` or ``--executor ray`` will pay for itself on one node.

A run's wall time on executor ``e`` is ``fixed_e + n / steady_e`` for ``n`` files to embed. The
other executors start slower than the local threads (worker processes to spawn; a Ray instance,
its workers and one model per actor), so they finish first only where their steady rate beats
local's, from the crossover ``n* = extra_start / (1 / steady_local - 1 / steady_e)``. Below it,
or at every size where the executor streams no faster than local, the run is told (a warning:
the run goes on as asked).

The constants come from ``python -m benchmarks.executors`` (the bundled starter model, fresh
process per run, Caltech-101 photos and generated JPEGs; ``benchmarks/README.md``, *Executors*)
on a 2-CPU node. Both rates scale with the CPUs (local: model threads and decode workers; the
others: processes or actors), so the crossover is taken to grow in proportion to them. A larger
model makes the model, not decoding, the bound, which only lowers an executor's advantage; the
advice is not given for a Ray cluster or GPU workers, which these one-node figures do not cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain, islice
from typing import Iterable, Iterator, Mapping, TypeVar

T = TypeVar("T")

#: CPUs of the node the constants were measured on
MEASURED_CPUS = 2
#: local steady rate per CPU, images/s: 342 images/s on 2 CPUs (benchmarks.executors, local,
#: Caltech-101 8,677 photos, load 3.5)
LOCAL_STEADY_PER_CPU = 171.0


@dataclass(frozen=True)
class ExecutorCost:
    """What an executor costs beside the local threads, on :data:`MEASURED_CPUS` CPUs."""

    extra_start_s: float
    """Fixed seconds per run beyond local's (start-up: processes, Ray, model copies)."""
    speedup: float
    """Its steady rate over local's (above 1: it streams faster once started)."""


COSTS: dict[str, ExecutorCost] = {
    # benchmarks.executors, Caltech-101: start-up 2 s after local's (1,000 and 8,677 photos, decode
    # workers no longer importing torch); steady rate 352 vs 342 images/s at 8,677 photos, load 3.5
    "processes": ExecutorCost(extra_start_s=2.0, speedup=1.03),
    # benchmarks.executors, Caltech-101 1,000 photos: 14.0 CPU-seconds more than local (Ray's own
    # processes, workers, a model per actor), at least 7 s on 2 CPUs (a lower bound: the wall
    # start-up was 19 s at load 2 before the fixes, 34 s at load 15 after); steady rate 494 vs
    # 467 images/s at load 2
    "ray": ExecutorCost(extra_start_s=7.0, speedup=1.06),
}
#: the most files an executor that streams its candidates counts before it starts, to give advice
LOOKAHEAD_LIMIT = 50_000


def crossover_files(executor: str, cpus: int, costs: Mapping[str, ExecutorCost] = COSTS) -> float | None:
    """Files to embed from which ``executor`` finishes before the local threads on ``cpus`` CPUs
    (0 for local; None where it never does, or where nothing was measured for it)."""
    if executor == "local":
        return 0.0
    cost = costs.get(executor)
    if cost is None or cost.speedup <= 1.0:
        return None
    local_rate = LOCAL_STEADY_PER_CPU * max(1, cpus)
    return cost.extra_start_s * local_rate / (1.0 - 1.0 / cost.speedup)


def executor_warning(executor: str, files: int | None, cpus: int, *, cluster: bool = False,
                     costs: Mapping[str, ExecutorCost] = COSTS) -> str | None:
    """A warning when ``executor`` will not pay for itself reading ``files`` files (None: not
    known yet) on ``cpus`` CPUs of one node, else None: None for local, for Ray with ``cluster``
    (a Ray cluster or GPU workers), for a run with nothing to read, and where ``files`` is not
    known and the executor could still pay at some size. ``costs``: the measured constants."""
    if executor == "local" or executor not in costs or cluster or (files is not None and files <= 0):
        return None
    cost = costs[executor]
    point = crossover_files(executor, cpus, costs)
    if point is not None and (files is None or files >= point):
        return None
    start = (f"with the starter model or a larger one it starts about {cost.extra_start_s:.0f} s later than "
             "the local threads")
    if point is None:
        why = f"{start} and streams no faster on one node"
    else:
        why = f"{start}, which its rate makes up only from about {_round(point):,} files on {cpus} CPUs"
    what = f"{cpus} CPUs" if files is None else f"{files:,} files to read, {cpus} CPUs"
    return (f"--executor {executor} will not pay for itself here ({what}): {why}; "
            "--executor local (the default) should finish sooner")


def stream_warning(executor: str, items: Iterable[T], cpus: int) -> tuple[str | None, Iterator[T]]:
    """:func:`executor_warning` for a run whose files to read stream in as ``items``: counts them
    up to the crossover (at most :data:`LOOKAHEAD_LIMIT`, held in memory) to tell. Returns the
    warning and an iterator over all of ``items``."""
    point = crossover_files(executor, cpus)
    limit = 0 if point is None else min(LOOKAHEAD_LIMIT, math.ceil(point))
    iterator = iter(items)
    head = list(islice(iterator, limit + 1))
    files = len(head) if len(head) <= limit or not head else None  # None: more than counted
    return executor_warning(executor, files, cpus), chain(head, iterator)


def _round(value: float) -> int:
    """``value`` to two significant figures (a measured estimate, not a count)."""
    digits = max(0, len(str(int(value))) - 2)
    return int(round(value, -digits))


__all__ = ["COSTS", "LOOKAHEAD_LIMIT", "ExecutorCost", "LOCAL_STEADY_PER_CPU", "MEASURED_CPUS", "crossover_files",
           "executor_warning", "stream_warning"]
