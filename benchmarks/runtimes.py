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

Threads, quiet and with a competing CPU load (skip with ``--no-threads``): per runtime, ``run_ingest``
end to end in two fresh processes (torch's OpenMP wait policy is read once, when torch loads), one
with the threads as they were (torch: the host's CPU count, libgomp's default spin-waiting;
ONNX Runtime: its default pools, spinning; 4 decode threads), one with the defaults now (sized to
the CPUs this process may use, no spin-waiting: ``clip_ingest.connectors.cpus``). Each measures,
in every round, a quiet ingest and one beside a competing load: one busy single-threaded numpy
loop per CPU (:func:`common.competing_load`), as other jobs of a shared machine. Reported:
images/s and CPU ms per image of each, and sized / before under each load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.runtime import load_embedder

from . import common
from .ingest import TINY, collection_name, forward_throughput, ingest_throughput

#: benchmark name -> (runtime, quantize)
RUNTIMES = {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}
AGREEMENT_IMAGES = 64
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the threads compared: as they were before they were sized, and the defaults now
THREADS = {"before": "host count, spinning, 4 decoders", "sized": "sized to the CPUs, no spinning"}
LOADS = ("quiet", "competing load")
#: libgomp's spin count when no wait policy is set: the "before" process spins as torch did
LIBGOMP_DEFAULT_SPIN = "300000"
WARM_UP_IMAGES = 8


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def threads_child(variant: str, name: str, args: Any) -> dict[str, Any]:
    """In a fresh process: ``run_ingest`` of ``args.images_dir`` with the ``variant`` threads
    (:data:`THREADS`), quiet then beside a competing load, ``args.repeats`` rounds."""
    runtime, quantize = RUNTIMES[name]
    folder = Path(args.images_dir)
    if variant == "sized":
        embedder, workers = load_embedder(args.model, runtime=runtime, quantize=quantize, device="cpu",
                                          batch_size=args.batch_size), None
    elif runtime == "torch":
        import torch

        from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

        torch.set_num_threads(os.cpu_count() or 1)
        embedder, workers = OpenClipEmbedder(args.model, device="cpu", batch_size=args.batch_size), 4
    else:
        from clip_ingest.connectors.onnx_embedder import OnnxEmbedder
        from clip_ingest.connectors.runtime import onnx_model_dir

        embedder, workers = OnnxEmbedder(onnx_model_dir(args.model, quantize=quantize), batch_size=args.batch_size), 4
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    embedder.embed_images(paths[:WARM_UP_IMAGES])
    result: dict[str, Any] = {"model_threads": _model_threads(embedder), "decode_workers": _decode_workers(workers)}
    for round_no in range(args.repeats):
        for load in LOADS:
            with common.competing_load() if load != "quiet" else contextlib.nullcontext():
                cpu = _cpu_seconds()
                rate = ingest_throughput(embedder, folder, "qdrant-edge", Path(args.workdir),
                                         collection_name("threads", variant, name, load, round_no), workers, args.batch_size, None)
                result.setdefault(load, []).append(rate)
                result.setdefault(f"{load} cpu ms/image", []).append(1000 * (_cpu_seconds() - cpu) / len(paths))
    return result


def _model_threads(embedder: Any) -> int | str:
    session = getattr(embedder, "_image", None)
    if session is None:
        import torch

        return torch.get_num_threads()
    return session.get_session_options().intra_op_num_threads or "ORT default"


def _decode_workers(workers: int | None) -> int:
    from clip_ingest.connectors.cpus import decode_workers

    return decode_workers(workers)


def run_threads_child(variant: str, name: str, args: Any, folder: Path, root: Path) -> dict[str, Any]:
    """:func:`threads_child` in its own interpreter, its environment free of thread settings (the
    "before" one with libgomp's default spinning); its JSON line parsed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "CLIP_INGEST_CPUS")}
    if variant == "before":
        env["GOMP_SPINCOUNT"] = LIBGOMP_DEFAULT_SPIN  # as torch ran: clip_ingest then leaves the wait policy alone
    command = [sys.executable, "-m", "benchmarks.runtimes", "--threads-child", variant, "--runtimes", name,
               "--model", args.model, "--images-dir", str(folder), "--workdir", str(root),
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"threads child {variant} {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def threads_table(args: Any, names: Sequence[str], folder: Path, work: Path) -> tuple[list[dict[str, Any]], list[common.Ratio]]:
    """The rows (runtime x threads x load) and the ratios sized / before of :func:`threads_child`."""
    measured = {(name, variant): run_threads_child(variant, name, args, folder, work / f"threads-{name}-{variant}")
                for name in names for variant in THREADS}
    rows, ratios = [], []
    for (name, variant), result in measured.items():
        for load in LOADS:
            rows.append({"runtime": name, "threads": f"{variant}: {THREADS[variant]}", "load": load,
                         "images_per_s": common.median(result[load]),
                         "cpu_ms_per_image": common.median(result[f"{load} cpu ms/image"]),
                         "model_threads": result["model_threads"], "decode_workers": result["decode_workers"]})
    rate = {(r["runtime"], r["threads"].split(":")[0], r["load"]): r["images_per_s"] for r in rows}
    for name in names:
        for load in LOADS:
            ratios.append(common.Ratio(f"{name}, {load}: sized / before", rate[(name, "sized", load)] / rate[(name, "before", load)]))
        ratios.append(common.Ratio(f"{name}, sized: competing load / quiet", rate[(name, "sized", LOADS[1])] / rate[(name, "sized", "quiet")]))
    return rows, ratios


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images to ingest [default: 512; smoke: 16]")
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) instead of generated images")
    parser.add_argument("--model", help=f"model spec [default: ViT-B-32:random; smoke: {TINY}]")
    parser.add_argument("--runtimes", nargs="+", choices=sorted(RUNTIMES), default=list(RUNTIMES))
    parser.add_argument("--workers", type=int, default=IngestOptions.workers, help="decode threads [default: pipeline's]")
    parser.add_argument("--batch-size", type=int, default=IngestOptions.batch_size, help="[default: pipeline's]")
    parser.add_argument("--repeats", type=int, help="interleaved rounds, medians reported [default: 2; smoke: 1]")
    parser.add_argument("--no-threads", action="store_true", help="skip the threads rows (quiet and with a competing CPU load)")
    parser.add_argument("--threads-child", choices=sorted(THREADS), help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads_child:
        result = threads_child(args.threads_child, args.runtimes[0], args)
        print(json.dumps(result))
        return result
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
        # the smoke run checks the threads rows on one runtime: each variant is a process of its own
        thread_runtimes = list(embedders)[:1] if args.smoke else list(embedders)
        threads = ([], []) if args.no_threads else threads_table(args, thread_runtimes, work.path / "images", work.path)
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
    tables = {"throughput (images/s, median of rounds) and agreement": rows}
    if threads[0]:
        config["competing_load"] = f"{len(os.sched_getaffinity(0))} busy single-threaded numpy loops"
        tables["threads, quiet and with a competing CPU load (end to end, images/s, median of rounds)"] = threads[0]
    return common.report("runtimes", config, tables, [*ratios, *threads[1]], args.json)


if __name__ == "__main__":
    main()
