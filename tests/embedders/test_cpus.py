"""The CPU budget (affinity, cgroup v1/v2 quotas with fake cgroup files, the override) and the
thread plan sized from it: model threads, decode workers, no spin-waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clip_ingest.connectors import cpus
from clip_ingest.connectors.cpus import (
    CPUS_ENV, ThreadPlan, affinity_cpus, cgroup_cpu_quota, cgroup_v1_quota, cgroup_v2_quota, cpu_budget, passive_openmp,
    thread_plan,
)
from clip_ingest.connectors.ingest import pipeline
from clip_ingest.connectors.ingest.executor import LocalExecutor
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest


def fake_cgroups(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A ``/proc/self/cgroup`` with ``proc_line`` and a cgroup root holding ``files`` (relative path -> text)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return proc, root


def test_the_budget_is_the_affinity_count_not_the_hosts(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert affinity_cpus() == 3
    assert cpu_budget(env={}, quota=None) == 3
    assert cpu_budget(env={}, affinity=8, quota=None) == 8


def test_a_cgroup_v2_quota_bounds_the_budget_and_the_smallest_level_wins(tmp_path):
    proc, root = fake_cgroups(tmp_path, "0::/system.slice/cron.service", {
        "cpu.max": "max 100000\n",
        "system.slice/cpu.max": "max 100000\n",
        "system.slice/cron.service/cpu.max": "150000 100000\n",
    })
    assert cgroup_cpu_quota(proc, root) == 1.5
    assert cpu_budget(env={}, affinity=16, quota=cgroup_cpu_quota(proc, root)) == 2  # 1.5 CPUs: rounded up
    (root / "system.slice" / "cpu.max").write_text("50000 100000\n")  # a parent's quota is tighter
    assert cgroup_cpu_quota(proc, root) == 0.5
    assert cpu_budget(env={}, affinity=16, quota=0.5) == 1


def test_a_cgroup_v2_max_is_no_quota(tmp_path):
    proc, root = fake_cgroups(tmp_path, "0::/", {"cpu.max": "max 100000\n"})
    assert cgroup_v2_quota("max 100000") is None and cgroup_cpu_quota(proc, root) is None
    assert cpu_budget(env={}, affinity=4, quota=cgroup_cpu_quota(proc, root)) == 4
    # a container sees its own cgroup as the root while /proc/self/cgroup names the host's path
    proc, root = fake_cgroups(tmp_path / "container", "0::/kubepods/pod1/abc", {"cpu.max": "200000 100000\n"})
    assert cgroup_cpu_quota(proc, root) == 2.0


def test_a_cgroup_v1_quota_bounds_the_budget_and_minus_one_is_none(tmp_path):
    proc, root = fake_cgroups(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_quota(proc, root) == 3.0
    assert cpu_budget(env={}, affinity=8, quota=cgroup_cpu_quota(proc, root)) == 3
    assert cgroup_v1_quota("-1", "100000") is None
    proc, root = fake_cgroups(tmp_path / "none", "1:cpu:/", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(proc, root) is None
    assert cgroup_cpu_quota(tmp_path / "no-such-file", root) is None  # no cgroups (macOS): no quota


def test_the_override_replaces_the_budget_and_a_bad_one_is_refused():
    assert cpu_budget(3, env={}, affinity=16, quota=None) == 3
    assert cpu_budget(env={CPUS_ENV: "5"}, affinity=2, quota=1.0) == 5
    assert cpu_budget(2, env={CPUS_ENV: "5"}, affinity=16, quota=None) == 2  # the setting over the environment
    for bad in ({CPUS_ENV: "0"}, {CPUS_ENV: "two"}):
        with pytest.raises(ValueError, match=CPUS_ENV):
            cpu_budget(env=bad, affinity=4, quota=None)
    with pytest.raises(ValueError, match="cpus"):
        cpu_budget(0, env={}, affinity=4, quota=None)


def test_the_plan_splits_the_budget_and_omp_num_threads_still_names_the_model_threads():
    assert thread_plan(env={}, affinity=8, quota=None) == ThreadPlan(budget=8, model_threads=8, decode_workers=4)
    assert thread_plan(env={}, affinity=1, quota=None) == ThreadPlan(1, 1, 1)
    assert thread_plan(env={}, affinity=64, quota=2.0) == ThreadPlan(2, 2, 1)
    assert thread_plan(env={"OMP_NUM_THREADS": "1"}, affinity=4, quota=None) == ThreadPlan(4, 1, 2)
    assert thread_plan(3, env={"OMP_NUM_THREADS": "1"}, affinity=4, quota=None) == ThreadPlan(3, 3, 1)
    assert thread_plan(env={CPUS_ENV: "6", "OMP_NUM_THREADS": "1"}, affinity=4, quota=None) == ThreadPlan(6, 6, 3)


def test_openmp_threads_wait_passively_unless_the_user_chose(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as before torch is loaded
    env: dict[str, str] = {}
    assert passive_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        assert not passive_openmp(chosen) and "PASSIVE" not in chosen.values()
    monkeypatch.setitem(sys.modules, "torch", object())  # loaded: libgomp has read its policy already
    assert not passive_openmp(env := {}) and env == {}
    # the package sets it on import, before any of its modules loads torch
    code = "import os, sys, clip_ingest.connectors.cli.ingest; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True).stdout.split()
    assert out == ["PASSIVE", "False"]


def test_the_pipelines_decode_workers_are_sized_from_the_plan(monkeypatch, tmp_path, tiny_embedder, shape_folder):
    monkeypatch.setenv(CPUS_ENV, "6")
    assert LocalExecutor().workers == 3 and LocalExecutor(5).workers == 5
    made: list[int] = []

    class Recording(LocalExecutor):
        def __init__(self, workers, *args, **kwargs):
            made.append(workers)
            super().__init__(workers, *args, **kwargs)

    monkeypatch.setattr(pipeline, "LocalExecutor", Recording)
    from clip_ingest.connectors.backends import open_store

    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    try:
        assert IngestOptions("images").workers is None
        stats = run_ingest(store, tiny_embedder, IngestOptions("images", directories=[str(shape_folder)], progress=False))
        assert stats.failed == 0 and made == [3]
    finally:
        store.close()
    assert cpus.decode_workers(None, 2) == 1 and cpus.decode_workers(4, 2) == 4
