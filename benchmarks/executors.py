"""The Ray executor beside the local one, and the Parquet load rate beside the embed rate.

Run ``python -m benchmarks.executors`` (``--images caltech101 --n 2000`` on real photos). In one
process, on one node, the same images and model, interleaved over ``--repeats`` rounds into
fresh Qdrant Edge collections: ``clip-ingest``'s pipeline with the local executor (decode
threads + one model) and with the Ray Data executor (a local Ray instance on every CPU: decode
tasks fused into one embed actor per CPU). Each Ray run includes its actors' start-up (the model
loads in every actor, as it would in a real run); the Ray instance itself is started once,
before the first round, and reported apart. Then the Parquet path: ingest into ``--target
parquet`` and load that artifact into a fresh collection without the model (``--from-parquet``).
Each executor also ingests the first quarter of the images, so a run's time splits into a fixed
start-up cost (Ray: starting the actors, each loading the model) and a marginal rate (images/s
once the pipeline streams): ``seconds(n) = fixed + n / marginal``. Target: Ray / local marginal
throughput >= 0.8 (the engine's overhead on one node); the whole-run ratio, which the start-up
lowers for small runs, is reported beside it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.runtime import load_embedder

from . import common
from .ingest import TINY


def ingest_rate(embedder: Any, folder: Path, target: str, root: Path, options: dict, executor: Any = None) -> float:
    """Images embedded per second by one fresh ingestion of ``folder`` (collection set-up included)."""
    with open_store(target, "bench", **options) as store:
        run = IngestOptions(collection="bench", directories=[str(folder)], recreate=True, progress=False,
                            max_batch_bytes=common.write_batch_bytes(target), batch_size=embedder.batch_size)
        seconds, stats = common.timed(lambda: run_ingest(store, embedder, run, executor=executor))
    if stats.failed or not stats.embedded:
        raise RuntimeError(f"{stats.failed} images failed, {stats.embedded} embedded")
    return stats.embedded / seconds


def parquet_load_rate(artifact: Path, root: Path) -> float:
    """Points per second of ``clip-ingest --from-parquet`` into a fresh Qdrant Edge collection."""
    from click.testing import CliRunner

    from clip_ingest.connectors.cli.ingest import main as ingest_main

    args = ["--from-parquet", str(artifact), "--target", "qdrant-edge", "--data-dir", str(root), "--collection",
            "loaded", "--recreate", "-q"]
    seconds, result = common.timed(lambda: CliRunner().invoke(ingest_main, args))
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    with open_store("qdrant-edge", "loaded", path=str(root / "qdrant-edge")) as store:
        return store.count() / seconds


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import ray

    from clip_ingest.connectors.ingest.ray_executor import RayExecutor

    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images [default: 1000; smoke: 24]")
    parser.add_argument("--images", help="a shared data set (e.g. caltech101) instead of generated images")
    parser.add_argument("--model", default=TINY, help=f"model spec [default: {TINY}]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, help="interleaved rounds [default: 2; smoke: 1]")
    args = parser.parse_args(argv)
    args.n = args.n or (24 if args.smoke else 1000)
    args.repeats = args.repeats or (1 if args.smoke else 2)
    factory = functools.partial(load_embedder, args.model, batch_size=args.batch_size)
    embedder = factory(device="cpu")
    work = common.Workdir.create(args.workdir)
    samples: dict[str, list[float]] = {"local": [], "ray": []}
    quarter_samples: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        paths, source = common.input_images(args.images, args.n, work.path / "images")
        folder, quarter = work.path / "images", work.path / "quarter"
        quarter.mkdir()
        for path in paths[: max(1, len(paths) // 4)]:
            (quarter / path.name).symlink_to(path.resolve())
        startup, _ = common.timed(lambda: ray.init(include_dashboard=False, log_to_driver=False,
                                                   configure_logging=False, ignore_reinit_error=True))
        executor = RayExecutor(factory, batch_size=args.batch_size)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        for round_no in range(args.repeats):
            for images, into in ((folder, samples), (quarter, quarter_samples)):
                for name, runner in (("local", None), ("ray", executor)):
                    root = work.path / f"db{round_no}-{images.name}-{name}"
                    into[name].append(ingest_rate(embedder, images, "qdrant-edge", root, {"path": str(root)}, runner))
        artifact_root = work.path / "artifact"
        embed_rate = ingest_rate(embedder, folder, "parquet", artifact_root, {"path": str(artifact_root)})
        load_rate = parquet_load_rate(artifact_root / "bench", work.path / "loaded")
        ray.shutdown()
    finally:
        work.close()
    n, nq = len(paths), max(1, len(paths) // 4)
    rows, marginal, notes = [], {}, []
    for name, label in (("local", "local (threads)"), ("ray", f"ray ({cpus} CPU actors)")):
        whole, part = common.median(samples[name]), common.median(quarter_samples[name])
        fixed, marginal[name] = common.fixed_and_marginal((nq, nq / part), (n, n / whole))
        if n / whole <= nq / part:
            notes.append(f"{name}: {n} images took no longer than {nq}: the marginal rate is the whole-run rate")
        rows.append({"executor": label, "images_per_s": whole, f"images_per_s_{nq}": part,
                     "fixed_s": fixed, "marginal_per_s": marginal[name], "rounds": samples[name]})
    local, ray_rate = rows[0]["images_per_s"], rows[1]["images_per_s"]
    parquet = [{"stage": "embed into parquet", "per_s": embed_rate}, {"stage": "load parquet into qdrant-edge", "per_s": load_rate}]
    ratios = [common.Ratio("ray / local marginal throughput", marginal["ray"] / marginal["local"], 0.8),
              common.Ratio(f"ray / local throughput, whole run of {n}", ray_rate / local),
              common.Ratio("parquet load rate / embed rate", load_rate / embed_rate)]
    config = {"images": args.n, "source": source, "model": args.model, "batch_size": args.batch_size,
              "repeats": args.repeats, "ray_cpus": cpus, "ray_start_s": round(startup, 1)}
    return common.report("executors", config, {"ingestion (images/s)": rows, "parquet (points/s)": parquet}, ratios, args.json,
                         notes)


if __name__ == "__main__":
    main()
