"""Crash consistency: SIGKILL ``clip-ingest`` at seeded moments, re-run, and find every image exactly once.

Each backend gets a corpus of 2,000 generated 32 px images. Cycle 0 is the first ingestion of
the whole corpus; every later cycle first changes the corpus (10 files deleted, 10 added, 10
modified in place, 10 moved to another folder) so that every phase has work. In each cycle a
``clip-ingest --prune`` run is SIGKILLed right after a seeded random event (the N-th scanned
file, decoded file, embedded batch, store write or path removal; see
:class:`reliability_helpers.KillPoint`), then a normal re-run must exit 0 and leave exactly the
files on disk in the collection: one point per content, every path once, correct payloads.

Ten kills on each backend (``slow``): the embedded Qdrant (Qdrant Edge), Milvus Lite and the
real Milvus server.
The last test kills the installed ``clip-ingest`` script itself at a random moment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip_ingest.connectors.backends import open_store
from reliability_helpers import (
    PHASES,
    KillPoint,
    PausePoint,
    Target,
    assert_exactly_once,
    check_store,
    delete_image,
    move_image,
    read_json,
    run_cli,
    run_executable,
    run_forked,
    start_cli,
    wait_for_file,
    write_corpus,
    write_numbered,
)

CORPUS = 2000
CHANGES = 10
"""Files deleted, added, modified and moved before each cycle after the first."""
BATCH = 8
SEED = 20240501
KILLS = 10


def events_in(phase: str, first: bool) -> int:
    """A number of events of ``phase`` that the killed run is sure to reach (so it is really killed)."""
    if first:  # everything is new: 2,000 files, 250 batches, 2 upserts of 1,000 points
        return {"scan": CORPUS, "decode": CORPUS, "embed": CORPUS // BATCH, "write": 2}[phase]
    # 10 added + 10 modified + 10 moved files are read; 20 new contents are one upsert and the
    # 10 moves one batch of payload updates; 10 modified files' old points + 10 deleted + 10
    # moved-from paths are removals
    return {"scan": CORPUS, "decode": 3 * CHANGES, "embed": 2 * CHANGES // BATCH, "write": 2, "prune": 2 * CHANGES}[phase]


def kill_plan(kills: int, rng: np.random.Generator) -> list[KillPoint]:
    """Seeded kill points: the first run is killed before pruning exists; then every phase in turn."""
    first = str(rng.choice([p for p in PHASES if p != "prune"]))
    phases = [first] + [str(p) for _ in range(kills) for p in rng.permutation(PHASES)]
    return [
        KillPoint(phase, int(rng.integers(1, events_in(phase, first=i == 0) + 1)))
        for i, phase in enumerate(phases[:kills])
    ]


def change_corpus(root: Path, cycle: int, rng: np.random.Generator, next_index: list[int]) -> None:
    """Delete, add, modify and move :data:`CHANGES` images each (the corpus keeps its size)."""
    files = sorted(root.rglob("*.png"))
    picked = rng.choice(len(files), size=3 * CHANGES, replace=False)
    deleted, modified, moved = (picked[i * CHANGES:(i + 1) * CHANGES] for i in range(3))
    for i in deleted:
        delete_image(files[i])
    for i in modified:
        index = int(files[i].stem.split("_")[1])
        path = files[i]
        folder = int(path.parent.name[1:])
        write_numbered(root, index, version=cycle, folder=folder)
    for i in moved:
        move_image(files[i], int(files[i].parent.name[1:]) + 1 + int(rng.integers(0, 5)))
    for _ in range(CHANGES):
        write_numbered(root, next_index[0])
        next_index[0] += 1


@pytest.fixture(params=["qdrant", "milvus-lite", pytest.param("milvus-server", marks=pytest.mark.milvus_server)])
def target(request, tmp_path) -> Target:
    return Target.for_param(request, tmp_path)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_leaves_every_image_exactly_once(target, tmp_path):
    root = write_corpus(tmp_path / "photos", CORPUS)
    rng = np.random.default_rng(SEED + len(target.name))
    args = [str(root), *target.args, "--prune", "--batch-size", str(BATCH)]
    next_index = [CORPUS]
    reached = []
    for cycle, point in enumerate(kill_plan(KILLS, rng)):
        if cycle:
            change_corpus(root, cycle, rng, next_index)
        killed = run_cli(args, tmp_path, hook=point)
        assert killed.killed, f"cycle {cycle}: {point} not reached (exit {killed.exit_code}): {killed.stderr[-2000:]}"
        reached.append(point.phase)
        rerun = run_cli([*args, "--summary", str(tmp_path / "s.json")], tmp_path)
        assert rerun.exit_code == 0, f"cycle {cycle} after {point}: {rerun.output[-3000:]}"
        summary = read_json(tmp_path / "s.json")
        assert summary["failed"] == 0
        target.check(root, summary["model_id"])
    assert set(reached) == set(PHASES)


@pytest.mark.slow
def test_sigkill_of_the_installed_script_at_a_random_moment(tmp_path):
    """The real ``clip-ingest`` executable, killed 0-3 s (seeded) after its run started ingesting."""
    root = write_corpus(tmp_path / "photos", CORPUS)
    dead_letter = tmp_path / "dead.jsonl"  # created when the pipeline starts: the kill clock starts there
    args = [str(root), "--data-dir", str(tmp_path / "data"), "--dead-letter", str(dead_letter), "--prune"]
    delay = float(np.random.default_rng(SEED).uniform(0.0, 3.0))
    killed = run_executable(args, tmp_path, kill_after=(dead_letter, delay))
    assert killed.exit_code in (-9, 0), killed.stderr[-2000:]
    rerun = run_executable([*args, "--summary", str(tmp_path / "s.json")], tmp_path)
    assert rerun.exit_code == 0, rerun.stderr[-3000:]
    with open_store("qdrant", "images", path=str(tmp_path / "data" / "qdrant")) as store:
        assert_exactly_once(store, root, "images", read_json(tmp_path / "s.json")["model_id"])


def test_kill_plan_is_seeded_and_covers_every_phase():
    """The plan itself (not slow, no processes): reproducible, and 10 kills reach all five phases."""
    plan = kill_plan(10, np.random.default_rng(SEED))
    assert plan == kill_plan(10, np.random.default_rng(SEED))
    assert {p.phase for p in plan} == set(PHASES) and plan[0].phase != "prune"
    assert all(1 <= p.count <= events_in(p.phase, i == 0) for i, p in enumerate(plan))


def test_second_run_exits_4_or_waits_and_a_killed_runs_lock_is_taken_over(tmp_path):
    """Run A holds the lock (paused mid-decode); B exits 4 naming A; C waits; A is SIGKILLed; C takes over."""
    root = write_corpus(tmp_path / "photos", 80)
    args = [str(root), "--data-dir", str(tmp_path / "data"), "--lock-file", str(tmp_path / "run.lock")]
    reached, never = tmp_path / "reached", tmp_path / "never"
    holder = start_cli(args, tmp_path, hook=PausePoint("decode", 10, str(reached), str(never)))
    wait_for_file(reached, holder)
    refused = run_cli(args, tmp_path)
    assert refused.exit_code == 4 and f"pid {holder.pid}" in refused.stderr, refused.output[-2000:]
    waiting = start_cli([*args, "--lock-timeout", "300", "--summary", str(tmp_path / "s.json")], tmp_path)
    holder.kill()
    assert holder.wait().killed
    result = waiting.wait()
    assert result.exit_code == 0, result.output[-3000:]
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == waiting.pid
    assert read_json(tmp_path / "s.json")["new"] == 80
    run_forked(check_store, "qdrant", {"path": str(tmp_path / "data" / "qdrant")}, "images", root, None)


def test_sigterm_saves_what_was_embedded_releases_the_lock_and_a_rerun_completes(tmp_path):
    """SIGTERM (Kubernetes, systemd) while the model runs: the batch in flight is abandoned, every
    earlier batch is written and flushed, the summary says so, the lock is free and exit is 143."""
    import os
    import signal

    root = write_corpus(tmp_path / "photos", 40)
    summary = tmp_path / "s.json"
    args = [str(root), "--data-dir", str(tmp_path / "data"), "--batch-size", "8", "--summary", str(summary)]
    reached, resume = tmp_path / "reached", tmp_path / "resume"
    run = start_cli(args, tmp_path, hook=PausePoint("embed", 2, str(reached), str(resume)))
    wait_for_file(reached, run)
    os.kill(run.pid, signal.SIGTERM)
    stopped = run.wait()
    assert stopped.exit_code == 143, stopped.output[-3000:]
    assert "interrupted by SIGTERM: saved 8 new" in stopped.stderr and "resumes" in stopped.stderr
    saved = read_json(summary)
    assert saved["interrupted"] is True and saved["new"] == 8
    again = run_cli([*args, "--lock-timeout", "0"], tmp_path)  # exit 4 here would mean a leaked lock
    assert again.exit_code == 0, again.output[-3000:]
    assert read_json(summary)["new"] == 32
    run_forked(check_store, "qdrant", {"path": str(tmp_path / "data" / "qdrant")}, "images", root, None)
