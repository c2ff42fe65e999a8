"""Runtimes side by side: torch vs ONNX Runtime fp32 vs ONNX Runtime int8, forward bound and end to end.

Run ``python -m benchmarks.runtimes`` (``--images /work/shared/data/caltech101`` for real
photos). One model (default: seeded random ViT-B-32; its speed is that of the trained one),
loaded once per runtime through :func:`clip_ingest.connectors.runtime.load_embedder`, as
``clip-ingest --runtime`` does. In every round, per runtime: (a) the forward pass on pre-decoded
inputs at the pipeline's batch size, (c) ``run_ingest`` end to end into a fresh Qdrant Edge
collection. Reported: images/s (median of rounds), (c)/(a), each runtime's speed-up over torch,
and how far its image vectors are from torch's (cosine distance over the images; fp32 ONNX must
stay below 1e-4). The quality cost on the evaluation benchmarks is ``clip-model eval --runtime torch
--runtime onnx --runtime onnx-int8``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.runtime import load_embedder

from . import common
from .ingest import TINY, collection_name, forward_throughput, ingest_throughput

#: benchmark name -> (runtime, quantize)
RUNTIMES = {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}
AGREEMENT_IMAGES = 64


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images to ingest [default: 512; smoke: 16]")
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) instead of generated images")
    parser.add_argument("--model", help=f"model spec [default: ViT-B-32:random; smoke: {TINY}]")
    parser.add_argument("--runtimes", nargs="+", choices=sorted(RUNTIMES), default=list(RUNTIMES))
    parser.add_argument("--workers", type=int, default=IngestOptions.workers, help="decode threads [default: pipeline's]")
    parser.add_argument("--batch-size", type=int, default=IngestOptions.batch_size, help="[default: pipeline's]")
    parser.add_argument("--repeats", type=int, help="interleaved rounds, medians reported [default: 2; smoke: 1]")
    args = parser.parse_args(argv)
    args.n = args.n or (16 if args.smoke else 512)
    args.model = args.model or (TINY if args.smoke else "ViT-B-32:random")
    args.repeats = args.repeats or (1 if args.smoke else 2)
    work = common.Workdir.create(args.workdir)
    os.environ.setdefault("CLIP_INGEST_CACHE", str(work.path / "cache"))  # a user's cache is never touched by a default run
    samples: dict[tuple[str, str], list[float]] = {}
    agreement: dict[str, np.ndarray] = {}
    try:
        paths, source = common.input_images(args.images, args.n, work.path / "images", 256)
        embedders = {name: load_embedder(args.model, runtime=r, quantize=q, device="cpu", batch_size=args.batch_size)
                     for name, (r, q) in RUNTIMES.items() if name in args.runtimes}
        probe = [str(p) for p in paths[:AGREEMENT_IMAGES]]
        reference = (embedders.get("torch") or load_embedder(args.model, device="cpu")).embed_images(probe)
        for name, embedder in embedders.items():
            agreement[name] = np.sum(embedder.embed_images(probe) * reference, axis=1)
        for round_no in range(args.repeats):
            for name, embedder in embedders.items():
                samples.setdefault((name, "forward (a)"), []).append(forward_throughput(embedder, paths, len(paths), args.batch_size))
                samples.setdefault((name, "ingest (c)"), []).append(ingest_throughput(
                    embedder, work.path / "images", "qdrant-edge", work.path / "db", collection_name("rt", name, round_no),
                    args.workers, args.batch_size, None))
    finally:
        work.close()
    rate = {key: common.median(values) for key, values in samples.items()}
    rows = [{"runtime": name, "model_id": embedders[name].model_id, "forward_images_per_s": rate[(name, "forward (a)")],
             "ingest_images_per_s": rate[(name, "ingest (c)")], "cos_distance_to_torch_max": float(1 - agreement[name].min()),
             "cos_distance_to_torch_mean": float(1 - agreement[name].mean())} for name in embedders]
    ratios = []
    for name in embedders:
        ratios.append(common.Ratio(f"{name}: ingest / forward  (c)/(a)", rate[(name, "ingest (c)")] / rate[(name, "forward (a)")],
                                   None if args.model == TINY else 0.9))
        if name != "torch" and "torch" in embedders:
            ratios.append(common.Ratio(f"{name} / torch, end to end (c)", rate[(name, "ingest (c)")] / rate[("torch", "ingest (c)")]))
    config = {"images": len(paths), "source": source, "model": args.model, "runtimes": list(embedders), "workers": args.workers,
              "batch_size": args.batch_size, "repeats": args.repeats, "target": "qdrant-edge"}
    return common.report("runtimes", config, {"throughput (images/s, median of rounds) and agreement": rows}, ratios, args.json)


if __name__ == "__main__":
    main()
