"""How many CPUs this process may use, and the threads sized to them (one plan for all pools).

The budget is the number of CPUs the process may run on (``os.sched_getaffinity``), bounded by
a cgroup CPU quota when one is set (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``; the smallest quota from the process's cgroup up to the root, rounded up:
a quota of 1.5 CPUs is 2), so a container limited to 2 CPUs on a 64-core host counts 2, not 64.
The ``cpus`` setting (``--cpus``, ``CLIP_INGEST_CPUS``) replaces it.

The split (:func:`thread_plan`), decided on measurements (``python -m benchmarks.runtimes``; recorded
in ``benchmarks/README.md``, "threads sized to the CPUs"):

- **model threads** = the budget: torch's intra-op threads (and its inter-op threads while they
  have not started), ONNX Runtime's intra-op pool (its inter-op pool gets 1 thread: a session
  runs the graph's nodes in sequence). A large model is compute-bound and uses them all.
  ``OMP_NUM_THREADS``, when set, names the model threads instead (a ``cpus`` setting wins over it);
- **decode workers** = half the budget, at least 1 (``--workers`` wins): decoding is lighter
  than the forward pass of any model but the smallest, and a worker that has filled the
  window of decodes in flight sleeps; more workers than that compete with the model threads
  for the same CPUs (the starter model on 2 CPUs: 1 decode worker ran faster than 2 or 4);
- **no spin-waiting**: a thread pool waiting for work sleeps instead of spinning on a CPU that
  a neighbour (or our own decode threads) could use. ONNX Runtime: ``allow_spinning = 0`` on
  both pools. torch's OpenMP pool (libgomp) reads its wait policy once, when torch is loaded,
  so :func:`passive_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment before that
  (``clip_ingest.connectors`` calls it on import); a user's ``OMP_WAIT_POLICY`` or
  ``GOMP_SPINCOUNT`` is kept.

With this plan the starter model ingests 4.6x faster on torch than with the threads as they
were (host count, spin-waiting, 4 decode threads) on 2 CPUs, 6x beside a competing CPU load, at
a third of the CPU time per image; 1.1-1.2x on ONNX Runtime.

This module imports only the standard library (torch and onnxruntime inside the functions
that configure them), so any layer may use it.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

#: the override of the budget (also the ``cpus`` setting's environment variable)
CPUS_ENV = "CLIP_INGEST_CPUS"
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: the ONNX Runtime session config keys that turn spin-waiting off
ORT_NO_SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def affinity_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cgroup_v2_quota(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` text (``"150000 100000"`` -> 1.5; ``"max ..."`` -> None)."""
    fields = cpu_max.split()
    if not fields or fields[0] == "max":
        return None
    period = float(fields[1]) if len(fields) > 1 else 100000.0
    return float(fields[0]) / period if period > 0 else None


def cgroup_v1_quota(quota_us: str, period_us: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1 -> None)."""
    quota, period = int(quota_us.strip()), int(period_us.strip())
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _levels(mount: Path, cgroup_path: str) -> list[Path]:
    """The folders of the process's cgroup under ``mount``, from its own up to the mount's root.
    Where the path is not there (a container sees only its own cgroup, mounted as the root), the root."""
    own = mount / cgroup_path.strip("/")
    if not own.is_dir():
        return [mount]
    levels = [own]
    while levels[-1] != mount and mount in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def _smallest(quotas: list[float | None]) -> float | None:
    known = [q for q in quotas if q is not None]
    return min(known) if known else None


def cgroup_cpu_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a cgroup quota allows this process (the smallest along its cgroup's path), or None
    where no quota is set or there are no cgroups. ``proc_cgroup`` is ``/proc/self/cgroup``'s text
    file, ``root`` where the cgroup file systems are mounted."""
    text = _read(Path(proc_cgroup))
    if text is None:
        return None
    quotas: list[float | None] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2, the unified hierarchy
            for level in _levels(Path(root), path):
                cpu_max = _read(level / "cpu.max")
                quotas.append(cgroup_v2_quota(cpu_max) if cpu_max else None)
        elif "cpu" in controllers.split(","):  # cgroup v1: mounted as cpu, or cpu,cpuacct
            for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                mount = Path(root) / name
                if mount.is_dir():
                    for level in _levels(mount, path):
                        quota, period = _read(level / "cpu.cfs_quota_us"), _read(level / "cpu.cfs_period_us")
                        quotas.append(cgroup_v1_quota(quota, period) if quota and period else None)
                    break
    return _smallest(quotas)


def _positive_int(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"{where} must be a whole number of CPUs >= 1, not {value!r}")
    return number


def cpu_budget(cpus: int | None = None, *, env: Mapping[str, str] | None = None, affinity: int | None = None,
               quota: float | None | str = "read") -> int:
    """The CPUs this process should size its threads to: ``cpus`` when given, else ``CLIP_INGEST_CPUS``,
    else the affinity count (``affinity``) bounded by the cgroup quota (``quota``: CPUs, None for no
    quota; read from the system by default), rounded up, at least 1."""
    env = os.environ if env is None else env
    given = _positive_int(cpus, "cpus") or _positive_int(env.get(CPUS_ENV), CPUS_ENV)
    if given:
        return given
    count = affinity_cpus() if affinity is None else affinity
    limit = cgroup_cpu_quota() if quota == "read" else quota
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


@dataclass(frozen=True)
class ThreadPlan:
    """The threads of one process, sized together (see the module doc for the split)."""

    budget: int
    """CPUs this process may use (or the ``cpus`` setting)."""
    model_threads: int
    """torch intra-op (and inter-op) threads, ONNX Runtime's intra-op pool."""
    decode_workers: int
    """Decode threads of the ingest pipeline (or processes with ``--executor processes``)."""

    def describe(self) -> str:
        return f"{self.model_threads} model threads, {self.decode_workers} decode workers ({self.budget} CPUs)"


def thread_plan(cpus: int | None = None, *, env: Mapping[str, str] | None = None, affinity: int | None = None,
                quota: float | None | str = "read") -> ThreadPlan:
    """The plan for a budget (:func:`cpu_budget`'s arguments); ``OMP_NUM_THREADS`` names the model
    threads unless ``cpus`` (or ``CLIP_INGEST_CPUS``) is given."""
    env = os.environ if env is None else env
    budget = cpu_budget(cpus, env=env, affinity=affinity, quota=quota)
    explicit = cpus is not None or bool(env.get(CPUS_ENV))
    try:
        omp = None if explicit else _positive_int(env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    except ValueError:  # OMP_NUM_THREADS=4,2 (nested levels) or junk: torch reads it its own way
        omp = None
    return ThreadPlan(budget, omp or budget, max(1, budget // 2))


def decode_workers(workers: int | None = None, cpus: int | None = None) -> int:
    """``workers`` when given, else the plan's decode workers for ``cpus``."""
    return workers or thread_plan(cpus).decode_workers


def passive_openmp(env: Any = None) -> bool:
    """Make torch's OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user chose (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set) or torch is loaded already
    (libgomp read its policy then). Returns whether it set it."""
    env = os.environ if env is None else env
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def size_torch(plan: ThreadPlan) -> None:
    """torch's intra-op threads to the plan; its inter-op threads too while they have not started."""
    import torch

    torch.set_num_threads(plan.model_threads)
    try:
        torch.set_num_interop_threads(plan.model_threads)
    except RuntimeError:  # set once per process, before any inter-op work: keep what is there
        pass


def onnx_session_options(plan: ThreadPlan) -> Any:
    """ONNX Runtime ``SessionOptions`` sized to the plan, with spin-waiting off in both pools."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.model_threads
    options.inter_op_num_threads = 1
    for key in ORT_NO_SPIN:
        options.add_session_config_entry(key, "0")
    return options


__all__ = [
    "CPUS_ENV", "ORT_NO_SPIN", "ThreadPlan", "affinity_cpus", "cgroup_cpu_quota", "cgroup_v1_quota", "cgroup_v2_quota",
    "cpu_budget", "decode_workers", "onnx_session_options", "passive_openmp", "size_torch", "thread_plan",
]
