"""Local threads vs decode processes vs Ray on one node: where each executor pays for itself.

Run ``python -m benchmarks.executors --images /work/shared/data/caltech101 --sizes 1000,8677``
(``--generated 50000`` adds a generated set; ``--budget-s 120`` caps each run of it and
extrapolates from its steady rate). Every run is a fresh Python process, as a ``clip-ingest``
run is: it imports the package, loads the model, builds the executor the CLI builds for
``--executor NAME`` (Ray: a local Ray instance started by the run) and ingests the first ``n``
images into a fresh Qdrant Edge collection in a temporary folder. Executors alternate within
each size, so a change of machine load falls on all three.

Per run: the process's wall time (what a user waits for), images/s over it, the start-up (from
the start of the process to the first decoded result), the steady rate (results per second from
the 20 % mark to the end) and the fixed cost ``wall - n / steady``. The ratio to local is local's
wall over the executor's at the same ``n``. From the largest run of each executor,
``wall(n) = fixed + n / steady``; the crossover is the ``n`` where an executor's wall equals
local's (none where its steady rate is not above local's). Then the Parquet path on the
smallest set: ingest into ``--target parquet`` and load that artifact into a fresh collection
without the model (``--from-parquet``). Target: Ray >= 0.8 x local at >= 8,677 images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import common

EXECUTORS = ("local", "processes", "ray")
#: Ray attached to an instance this benchmark starts once (``ray start`` on the node, then
#: ``--ray-address``): no cluster start-up per run; its CPU seconds leave out that instance
RAY_RUNNING = "ray-running"
REPO = Path(__file__).resolve().parents[1]
#: the steady rate is measured from this fraction of a run's results to its end (warm-up excluded)
STEADY_FROM = 0.2
#: the bar for Ray's whole-run throughput beside local's, from this many images
RAY_BAR, RAY_BAR_FROM = 0.8, 8677


# -- one run, in its own process
def child_run(name: str, folder: Path, root: Path, model: str, batch_size: int, budget_s: float | None,
              started: float) -> dict[str, Any]:
    """Ingest ``folder`` with executor ``name`` into a fresh Qdrant Edge collection under ``root``, as
    ``clip-ingest --executor NAME`` does; ``started``: the process's start (``time.time()``)."""
    import functools

    from clip_ingest.connectors.backends import open_store
    from clip_ingest.connectors.backends.registry import backend
    from clip_ingest.connectors.cpus import decode_workers
    from clip_ingest.connectors.ingest.pipeline import IngestInterrupted, IngestOptions, run_ingest
    from clip_ingest.connectors.runtime import load_embedder

    embedder = load_embedder(model, batch_size=batch_size)
    executor: Any = None  # local: the pipeline's own threads
    if name == "processes":
        from clip_ingest.connectors.ingest.process_executor import ProcessExecutor

        executor = ProcessExecutor(workers=decode_workers())
    elif name in ("ray", RAY_RUNNING):  # RAY_RUNNING: RAY_ADDRESS names the instance to attach to
        from clip_ingest.connectors.ingest.ray_executor import RayExecutor

        executor = RayExecutor(functools.partial(load_embedder, model, batch_size=batch_size), batch_size=batch_size)
    loaded = time.time()
    stamps: list[float] = []

    def clock() -> bool:  # asked by the pipeline once per result: the results' timeline
        stamps.append(time.time())
        return budget_s is not None and stamps[-1] - started > budget_s

    with open_store("qdrant-edge", "bench", path=str(root)) as store:
        run = IngestOptions(collection="bench", directories=[str(folder)], recreate=True, progress=False,
                            max_batch_bytes=backend("qdrant-edge").write_batch_bytes, batch_size=batch_size)
        try:
            stats = run_ingest(store, embedder, run, executor=executor, should_stop=clock)
        except IngestInterrupted as stopped:  # the time budget ran out
            stats = stopped.stats
    cpu = tree_cpu_seconds()
    if name in ("ray", RAY_RUNNING):
        import ray

        ray.shutdown()  # attached: only disconnects
    if stats.failed or not stats.embedded:
        raise RuntimeError(f"{stats.failed} images failed, {stats.embedded} embedded")
    first = int(len(stamps) * STEADY_FROM)
    span = stamps[-1] - stamps[first] if stamps else 0.0
    steady = (len(stamps) - 1 - first) / span if span > 0 else float("nan")  # nan: too few results to tell
    return {"embedded": stats.embedded, "results": len(stamps), "load_s": loaded - started,
            "startup_s": stamps[0] - started, "steady_per_s": steady, "cpu_s": cpu}


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its ended children and every live descendant
    (Ray's own processes and workers): what a run costs whatever the machine's load."""
    import resource

    own = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid], ticks[pid] = int(fields[1]), sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    found, todo = set(), [os.getpid()]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        todo.extend(children)
    return own + sum(ticks[pid] for pid in found) / os.sysconf("SC_CLK_TCK")


def run_in_process(name: str, folder: Path, root: Path, args: Any, budget_s: float | None,
                   env: dict[str, str]) -> dict[str, Any]:
    """One run of executor ``name`` in a fresh Python process (``env`` added to its environment);
    its timings and the wall time."""
    command = [sys.executable, "-m", "benchmarks.executors", "--child", name, "--folder", str(folder),
               "--db", str(root),
               "--model", args.model, "--batch-size", str(args.batch_size)]
    if budget_s:
        command += ["--budget-s", str(budget_s)]
    load = os.getloadavg()[0]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env, "BENCH_STARTED": repr(start)})
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} on {folder}: exit {done.returncode}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "load_before": round(load, 2)}


# -- the fit
def line(run: dict[str, Any]) -> tuple[float, float]:
    """``(fixed seconds, steady images/s)`` of one run: ``wall = fixed + n / steady``."""
    return run["wall_s"] - run["results"] / run["steady_per_s"], run["steady_per_s"]


def crossover(executor: tuple[float, float], local: tuple[float, float]) -> float | None:
    """The ``n`` from which ``executor`` (fixed s, steady images/s) finishes before ``local``; None: never."""
    (fixed, steady), (local_fixed, local_steady) = executor, local
    gain = 1 / local_steady - 1 / steady  # seconds saved per image
    if gain <= 0:
        return None
    return max(0.0, (fixed - local_fixed) / gain)


def predicted_wall(model: tuple[float, float], n: int) -> float:
    fixed, steady = model
    return fixed + n / steady


# -- the Parquet path (in this process)
def ingest_rate(embedder: Any, folder: Path, root: Path) -> float:
    """Images embedded per second by one fresh ingestion of ``folder`` into a Parquet artifact under
    ``root`` (collection set-up and the final flush included)."""
    from clip_ingest.connectors.artifacts.parquet import WRITE_BATCH_BYTES, ParquetArtifact
    from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest

    with ParquetArtifact("bench", path=str(root)) as artifact:
        run = IngestOptions(collection="bench", directories=[str(folder)], recreate=True, progress=False,
                            max_batch_bytes=WRITE_BATCH_BYTES, batch_size=embedder.batch_size)
        seconds, stats = common.timed(lambda: run_ingest(artifact, embedder, run))
    if stats.failed or not stats.embedded:
        raise RuntimeError(f"{stats.failed} images failed, {stats.embedded} embedded")
    return stats.embedded / seconds


def parquet_load_rate(artifact: Path, root: Path) -> float:
    """Points per second of ``clip-ingest --from-parquet`` into a fresh Qdrant Edge collection."""
    from click.testing import CliRunner

    from clip_ingest.connectors.backends import open_store
    from clip_ingest.connectors.cli.ingest import main as ingest_main

    args = ["--from-parquet", str(artifact), "--target", "qdrant-edge", "--data-dir", str(root), "--collection",
            "loaded", "--recreate", "-q"]
    seconds, result = common.timed(lambda: CliRunner().invoke(ingest_main, args))
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    with open_store("qdrant-edge", "loaded", path=str(root / "qdrant-edge")) as store:
        return store.count() / seconds


def parquet_rows(folder: Path, work: Path, model: str, batch_size: int) -> list[dict[str, Any]]:
    from clip_ingest.connectors.runtime import load_embedder

    embedder = load_embedder(model, batch_size=batch_size)
    artifact_root = work / "artifact"
    for kept in (artifact_root, work / "loaded"):
        shutil.rmtree(kept, ignore_errors=True)
    embed_rate = ingest_rate(embedder, folder, artifact_root)
    load_rate = parquet_load_rate(artifact_root / "bench", work / "loaded")
    return [{"stage": "embed into parquet", "per_s": embed_rate},
            {"stage": "load parquet into qdrant-edge", "per_s": load_rate}]


# -- inputs
#: distinct generated scenes; the files of a large set are these with a stamped index, which is
#: cheaper to write than a new scene each
SCENES = 256


def generated_set(work: Path, n: int, size: int = 256) -> Path:
    """``n`` distinct generated ``size`` px JPEGs under ``work`` (100 per folder; reused when a kept
    ``--workdir`` holds them already). Each is one of :data:`SCENES` scenes with its index stamped
    into a corner block, so every file's content differs (every image is embedded)."""
    import numpy as np
    from PIL import Image

    folder, done = work / f"generated-{n}", work / f"generated-{n}.done"
    if done.exists():
        return folder
    rng = np.random.default_rng(0)
    scenes = [np.asarray(common.synthetic_image(i, size, rng)) for i in range(SCENES)]
    for i in range(n):
        pixels, copy = scenes[i % SCENES].copy(), i // SCENES  # copy < 256 for up to 65,536 files
        pixels[:16, :16] = [(copy % 16) * 16, (copy // 16) * 16, 128]  # steps JPEG keeps apart
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sub / f"img_{i:06d}.jpg", "JPEG", quality=90)
    done.touch()
    return folder


def input_sets(args: Any, work: Path) -> list[tuple[str, int, Path, float | None]]:
    """``(set, n, folder, budget)`` of every size to run."""
    sets = []
    for n in args.sizes:
        folder = work / f"images-{n}"
        if not folder.exists():
            common.input_images(args.images, n, folder)
        found = sum(1 for path in folder.rglob("*") if path.suffix.lower() in common.IMAGE_SUFFIXES)
        sets.append((Path(args.images).name if args.images else "generated", found, folder, None))
    if args.generated:
        sets.append(("generated", args.generated, generated_set(work, args.generated), args.budget_s))
    return sets


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        help="images per run, comma-separated [default: 1000,8677; smoke: 24]")
    parser.add_argument("--images", help="a shared data set (e.g. caltech101) instead of generated images")
    parser.add_argument("--generated", type=int, help="also a generated set of this many 256 px JPEGs")
    parser.add_argument("--budget-s", type=float,
                        help="cap each run of the generated set (seconds; the rest extrapolated)")
    parser.add_argument("--executors", type=lambda s: s.split(","), default=list(EXECUTORS),
                        help=f"comma-separated, of {', '.join(EXECUTORS)}, {RAY_RUNNING} [default: the first three]")
    parser.add_argument("--model", default="starter", help="model spec [default: the bundled starter]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", choices=(*EXECUTORS, RAY_RUNNING), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        started = float(os.environ.get("BENCH_STARTED") or time.time())
        result = child_run(args.child, Path(args.folder), Path(args.db), args.model, args.batch_size, args.budget_s,
                           started)
        print(json.dumps(result))
        return result
    args.sizes = args.sizes or ([24] if args.smoke else [1000, 8677])
    work = common.Workdir.create(args.workdir)
    runs: list[dict[str, Any]] = []
    running = running_ray() if RAY_RUNNING in args.executors else None
    try:
        for set_name, n, folder, budget in input_sets(args, work.path):
            for name in args.executors:
                root = work.path / f"db-{set_name}-{n}-{name}"
                shutil.rmtree(root, ignore_errors=True)  # a fresh collection every run, also in a kept --workdir
                env = {"RAY_ADDRESS": running} if name == RAY_RUNNING and running else {}
                result = run_in_process(name, folder, root, args, budget, env)
                runs.append({"set": set_name, "n": n, "executor": name, **result})
                print(f"{set_name} {n} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        parquet = parquet_rows(input_sets(args, work.path)[0][2], work.path, args.model, args.batch_size)
    finally:
        if running:
            import ray

            ray.shutdown()
        work.close()
    return summarise(runs, parquet, args)


def running_ray() -> str:
    """Start a local Ray instance in this process, as ``ray start`` would on the node (workers at the
    driver's priority, as the executor starts its own); its address for runs to attach to."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
             _system_config={"worker_niceness": 0})
    return ray.get_runtime_context().gcs_address


def summarise(runs: list[dict[str, Any]], parquet: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    """The tables, the fit and the ratios of ``runs``."""
    local_wall: dict[tuple[str, int], float] = {}
    rows, notes = [], []
    for run in runs:
        fixed, steady = line(run)
        extrapolated = run["results"] < run["n"]
        wall = fixed + run["n"] / steady if extrapolated else run["wall_s"]
        if run["executor"] == "local":
            local_wall[run["set"], run["n"]] = wall
        rows.append({"set": run["set"], "n": run["n"], "executor": run["executor"], "wall_s": wall,
                     "images_per_s": run["n"] / wall, "load_model_s": run["load_s"], "startup_s": run["startup_s"],
                     "steady_per_s": steady, "fixed_s": fixed, "cpu_s": run["cpu_s"], "load_1m": run["load_before"],
                     "measured": "extrapolated" if extrapolated else "whole run"})
        if extrapolated:
            notes.append(f"{run['executor']} {run['set']} {run['n']}: {run['results']} images in the budget, "
                         "the rest extrapolated at the steady rate")
    for row in rows:
        base = local_wall.get((row["set"], row["n"]))
        row["vs_local"] = base / row["wall_s"] if base else float("nan")
    largest = {}
    for run in runs:
        if run["executor"] not in largest or run["n"] > largest[run["executor"]]["n"]:
            largest[run["executor"]] = run
    fits = []
    if "local" in largest:
        local_model = line(largest["local"])
        for name, run in largest.items():
            model = line(run)
            point = crossover(model, local_model) if name != "local" else None
            fits.append({"executor": name, "fixed_s": model[0], "steady_per_s": model[1], "fit_from_n": run["n"],
                         "crossover_n": "-" if name == "local" else ("never" if point is None else round(point))})
    ratios = [common.Ratio(f"{row['executor']} / local throughput, {row['set']} {row['n']}", row["vs_local"],
                           RAY_BAR if row["executor"] == "ray" and row["n"] >= RAY_BAR_FROM else None)
              for row in rows if row["executor"] != "local" and row["vs_local"] == row["vs_local"]]
    ratios.append(common.Ratio("parquet load rate / embed rate", parquet[1]["per_s"] / parquet[0]["per_s"]))
    config = {"sizes": args.sizes, "images": args.images or "generated", "generated": args.generated,
              "budget_s": args.budget_s, "model": args.model, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    tables = {"runs (fresh process each)": rows, "fit: wall = fixed + n / steady": fits, "parquet (points/s)": parquet}
    return common.report("executors", config, tables, ratios, args.json, notes)


if __name__ == "__main__":
    main()
