"""Ingest efficiency: forward-pass limit vs decode vs end-to-end ingestion vs a naive tutorial loop.

Run ``python -m benchmarks.ingest`` (``--help`` for sizes, ``--images DIR`` for a real folder).
For each model it measures, side by side in every round:

(a) ``forward``: ``embed_pixels`` on pre-decoded, pre-stacked tensors at the pipeline's batch
    size -- the compute limit ingestion can at best reach;
(b) ``decode``: read + hash + decode + preprocess with the pipeline's worker threads, no model;
(c) ``ingest``: ``run_ingest`` end to end into each target (fresh collection);
(d) ``naive``: one image at a time -- PIL open, preprocess, forward, one upsert per image;
(e) ``batch-1 forward``: (a) at batch size 1, on the naive loop's images.

and reports (c)/(a) (target >= 0.90 for models whose forward pass dominates, i.e. not the
tiny config) and (c)/(d) (target >= 5), with the two bounds that explain them: (c)/(b), how
close ingestion comes to its own decode stage (what limits a tiny model), and (a)/(e), the
most that batching can gain over the naive loop for a compute-bound model (on a CPU little,
so (c)/(d) of a large model can never reach 5 there; on a GPU batch 1 wastes most of it).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from clip_ingest.connectors.backends.base import CollectionSpec, Point
from clip_ingest.connectors.cpus import decode_workers
from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.ingest.executor import LocalExecutor, StageExecutor
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.ingest.plan import Planner
from clip_ingest.connectors.ingest.scan import Scan
from clip_ingest.connectors.ingest.stages import DecodeStage, ImageEncoder
from clip_ingest.connectors.ingest.state import StoredState
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

from . import common

TINY = "clip-ingest-tiny:random"
DEFAULT_MODELS = (TINY, "ViT-B-32:random")
#: distinct pre-decoded images cycled through by the forward measurement
FORWARD_POOL = 64


def collection_name(*parts: Any) -> str:
    """A collection name every backend accepts (letters, digits, underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(map(str, parts)))


def forward_throughput(embedder: Embedder, paths: Sequence[Path], n: int, batch_size: int) -> float:
    """(a) images/s of ``embed_pixels`` over ``n`` images in batches of ``batch_size`` (inputs pre-built)."""
    pool = [embedder.preprocess(embedder.decode(p).image) for p in paths[:FORWARD_POOL]]
    stack = np.stack if isinstance(pool[0], np.ndarray) else torch.stack  # ONNX Runtime takes numpy
    full = stack([pool[i % len(pool)] for i in range(batch_size)])
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    partial = full[: n % batch_size].copy() if isinstance(full, np.ndarray) else full[: n % batch_size].clone()
    seconds = 0.0
    for size in sizes:
        batch = full if size == batch_size else partial
        elapsed, _ = common.timed(lambda: embedder.embed_pixels(batch))
        seconds += elapsed
    return n / seconds


def decode_throughput(embedder: Embedder, folder: Path, workers: int | None, executor: StageExecutor | None = None) -> float:
    """(b) images/s of the pipeline's own decode stage (read, hash, decode, preprocess) on its
    thread pool, or on ``executor`` (its start-up included, as a run pays it)."""
    state = StoredState()
    decode = DecodeStage(ImageEncoder(embedder), "bench", state)
    planner = Planner(Scan([str(folder)], on_problem=lambda p: None), state)
    workers = decode_workers(workers)
    executor = executor or LocalExecutor(workers, window=4 * workers)
    seconds, count = common.timed(lambda: sum(1 for _ in executor.results(planner, decode)))
    return count / seconds


def ingest_throughput(
    embedder: Embedder, folder: Path, target: str, root: Path, collection: str,
    workers: int, batch_size: int, milvus_uri: str | None, executor: StageExecutor | None = None,
) -> float:
    """(c) images/s of ``run_ingest`` (on ``executor``, default the local threads) into a fresh
    collection of ``target`` (store connection not timed)."""
    store = common.open_target(target, root, collection, milvus_uri)
    try:
        options = IngestOptions(
            collection=collection, directories=[str(folder)], workers=workers, batch_size=batch_size,
            max_batch_bytes=common.write_batch_bytes(target), recreate=True, progress=False,
        )
        seconds, stats = common.timed(lambda: run_ingest(store, embedder, options, executor=executor))
        if stats.failed:
            raise RuntimeError(f"{stats.failed} images failed to ingest into {target}")
        return stats.embedded / seconds
    finally:
        store.close()


def naive_throughput(
    embedder: OpenClipEmbedder, paths: Sequence[Path], target: str, root: Path, collection: str,
    milvus_uri: str | None,
) -> float:
    """(d) images/s of the tutorial loop: PIL open, preprocess, forward, one upsert per image.

    Collection setup is timed, as it is inside ``run_ingest``.
    """
    from PIL import Image

    store = common.open_target(target, root, collection, milvus_uri)
    model, preprocess = embedder.model, embedder.loaded.preprocess
    try:

        def run() -> None:
            store.ensure_collection(CollectionSpec(collection, embedder.dim, embedder.model_id), recreate=True)
            for path in paths:
                image = Image.open(path).convert("RGB")
                with torch.no_grad():
                    vector = model.encode_image(preprocess(image).unsqueeze(0))[0]
                vector = (vector / vector.norm()).numpy()
                point_id = str(uuid.uuid5(uuid.NAMESPACE_URL, str(path)))
                store.upsert([Point(point_id, vector, {"path": str(path)})])
            store.flush()

        seconds, _ = common.timed(run)
        return len(paths) / seconds
    finally:
        store.close()


def measure_model(spec: str, args: Any, folder: Path, paths: Sequence[Path], work: Path) -> list[dict[str, Any]]:
    """Every measurement of one model, interleaved over ``args.repeats`` rounds; one row per median."""
    embedder = OpenClipEmbedder(spec, device="cpu", batch_size=args.batch_size)
    naive_paths = paths[: args.naive_n]
    samples: dict[tuple[str, str], list[float]] = {}

    def add(measure: str, target: str, value: float) -> None:
        samples.setdefault((measure, target), []).append(value)

    for round_no in range(args.repeats):
        add("forward (a)", "-", forward_throughput(embedder, paths, len(paths), args.batch_size))
        add("batch-1 forward (e)", "-", forward_throughput(embedder, naive_paths, len(naive_paths), 1))
        add("decode (b)", "-", decode_throughput(embedder, folder, args.workers))
        for target in args.targets:
            name = collection_name("bench", spec, round_no)
            add("ingest (c)", target, ingest_throughput(
                embedder, folder, target, work / "db" / target, name, args.workers, args.batch_size, args.milvus_uri))
            add("naive (d)", target, naive_throughput(
                embedder, naive_paths, target, work / "db" / f"{target}-naive", name + "_naive", args.milvus_uri))
    return [
        {"model": spec, "measure": measure, "target": target, "images_per_s": common.median(values),
         "rounds": len(values), "images": len(naive_paths) if measure.startswith("naive") else len(paths)}
        for (measure, target), values in samples.items()
    ]


def ratios(rows: Sequence[dict[str, Any]]) -> list[common.Ratio]:
    """Per model the batching bound (a)/(e); per model and target (c)/(a), (c)/(d) and (c)/(b)."""
    rate = {(r["model"], r["measure"].split()[0], r["target"]): r["images_per_s"] for r in rows}
    out = []
    for (model, measure, target), value in rate.items():
        if measure == "forward":
            out.append(common.Ratio(f"{model}: batched / batch-1 forward  (a)/(e)", value / rate[(model, "batch-1", "-")]))
        if measure != "ingest":
            continue
        forward_target = None if model == TINY else 0.90
        out.append(common.Ratio(f"{model} -> {target}: ingest / forward  (c)/(a)", value / rate[(model, "forward", "-")], forward_target))
        out.append(common.Ratio(f"{model} -> {target}: ingest / naive    (c)/(d)", value / rate[(model, "naive", target)], 5.0))
        out.append(common.Ratio(f"{model} -> {target}: ingest / decode   (c)/(b)", value / rate[(model, "decode", "-")]))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images to ingest [default: 2000; smoke: 24]")
    parser.add_argument("--naive-n", type=int, help="images for the one-at-a-time baseline [default: min(n, 200)]")
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) instead of generated images")
    parser.add_argument("--size", type=int, default=256, help="side of generated images [default: 256]")
    parser.add_argument("--models", nargs="+", help=f"model specs [default: {' '.join(DEFAULT_MODELS)}; smoke: {TINY}]")
    parser.add_argument("--targets", nargs="+", help="targets to measure [default: all embedded ones + milvus-server with a URI]")
    parser.add_argument("--workers", type=int, default=IngestOptions.workers, help="decode threads [default: pipeline's]")
    parser.add_argument("--batch-size", type=int, default=IngestOptions.batch_size, help="[default: pipeline's]")
    parser.add_argument("--repeats", type=int, help="interleaved rounds, medians reported [default: 2; smoke: 1]")
    args = parser.parse_args(argv)
    args.n = args.n or (24 if args.smoke else 2000)
    args.naive_n = args.naive_n or min(args.n, 12 if args.smoke else 200)
    args.models = args.models or ([TINY] if args.smoke else list(DEFAULT_MODELS))
    args.targets = args.targets or common.targets(args.milvus_uri)
    args.repeats = args.repeats or (1 if args.smoke else 2)
    work = common.Workdir.create(args.workdir)
    try:
        paths, source = common.input_images(args.images, args.n, work.path / "images", args.size)
        rows = [row for spec in args.models for row in measure_model(spec, args, work.path / "images", paths, work.path)]
    finally:
        work.close()
    config = {"images": len(paths), "source": source, "models": args.models, "targets": args.targets,
              "workers": args.workers, "batch_size": args.batch_size, "naive_images": args.naive_n, "repeats": args.repeats}
    return common.report("ingest efficiency", config, {"throughput (images/s, median of rounds)": rows}, ratios(rows), args.json)


if __name__ == "__main__":
    main()
