"""Peers side by side: clip-ingest (torch, ONNX, ONNX int8) vs FastEmbed (+ qdrant-client) vs clip-retrieval.

Run ``python -m benchmarks.peers --images /work/shared/data/caltech101`` (``--n 2000`` for the
full run). One seeded ViT-B-32 is saved once as an open_clip ``local-dir:`` export with ONNX
towers; every contender embeds the same JPEG files with those same weights, end to end:

- ``clip-ingest torch|onnx|onnx-int8``: ``run_ingest`` (the CLI's pipeline, start-up excluded) into
  the embedded Qdrant (qdrant-client local mode, the CLI's default target); int8 once more with
  ``--executor processes`` (decode in ``--processes`` worker processes, their start-up included);
- ``fastembed``: FastEmbed's ``ImageEmbedding`` on the same ``image.onnx`` (``specific_model_path``)
  + ``qdrant_client`` batched upserts into local mode, as Qdrant's docs show a user;
- ``clip-retrieval``: its ``inference`` command on the same folder and weights (embeddings to
  .npy), from its own environment (``--clip-retrieval-python``; how to build one: benchmarks/README),
  start-up excluded like the others' by timing it on 32 images too and taking the difference.

and the forward-pass bound of each clip-ingest runtime on pre-decoded inputs. Rounds are
interleaved. The race is only fair if preprocessing matches: the cosine of each contender's
vectors to clip-ingest torch's is reported per image (FastEmbed's centre crop rounds its offset
down where torchvision rounds it: a one-pixel shift on some images). Targets: clip-ingest's
best runtime >= 1.5x FastEmbed end to end, >= clip-retrieval, >= 0.9x its own forward bound; the
default runtime (ONNX fp32: the export carries its towers) >= 0.95x its forward bound quiet, and
>= FastEmbed with ``--load busy`` (one busy single-threaded numpy loop per CPU beside every
contender, :func:`common.competing_load`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.ingest.process_executor import ProcessExecutor
from clip_ingest.connectors.runtime import load_embedder

from . import common
from .ingest import collection_name, forward_throughput, ingest_throughput

PROCESSES = "clip-ingest onnx-int8, processes"
UPSERT_BATCH = 64
STARTUP_IMAGES = 32


def fastembed_folder(export: Path, into: Path) -> Path:
    """The export's image tower and a ``preprocessor_config.json`` saying what open_clip does."""
    config = json.loads((export / "open_clip_config.json").read_text())["preprocess_cfg"]
    size = config["size"][0] if isinstance(config["size"], list) else config["size"]
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(export / "onnx" / "image.onnx", into / "model.onnx")
    (into / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(config["mean"]), "image_std": list(config["std"]), "do_convert_rgb": True,
    }))
    return into


def fastembed_run(folder: Path, paths: Sequence[str], db: Path, batch_size: int, dim: int) -> tuple[float, np.ndarray]:
    """(images/s, vectors) of FastEmbed + qdrant-client, model load excluded, collection creation included."""
    from fastembed import ImageEmbedding
    from qdrant_client import QdrantClient, models

    model = ImageEmbedding("Qdrant/clip-ViT-B-32-vision", specific_model_path=str(folder), lazy_load=False)
    client = QdrantClient(path=str(db))
    vectors: list[np.ndarray] = []

    def run() -> None:
        name = f"fastembed_{uuid.uuid4().hex[:8]}"
        client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        batch: list[Any] = []
        for path, vector in zip(paths, model.embed(list(paths), batch_size=batch_size)):
            vectors.append(vector)
            batch.append(models.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(path))), vector=vector.tolist(),
                                            payload={"path": str(path)}))
            if len(batch) == UPSERT_BATCH:
                client.upsert(name, batch)
                batch = []
        if batch:
            client.upsert(name, batch)

    seconds, _ = common.timed(run)
    client.close()
    return len(paths) / seconds, np.array(vectors)


def _clip_retrieval_once(python: str, model: str, weights: Path, folder: Path, out: Path) -> tuple[float, Path] | str:
    command = [python, "-m", "clip_retrieval.cli", "inference", "--input_dataset", str(folder), "--output_folder", str(out),
               "--clip_model", f"open_clip:{model}/{weights}", "--enable_text", "False", "--enable_metadata", "False",
               "--num_prepro_workers", "2", "--batch_size", "32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    seconds, result = common.timed(lambda: subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env))
    if result.returncode != 0:
        return f"clip-retrieval inference exited {result.returncode}: {result.stderr.strip()[-400:]}"
    return seconds, out


def clip_retrieval_run(python: str, model: str, export: Path, folder: Path, startup_folder: Path, out: Path,
                       order: Sequence[str]) -> tuple[float, np.ndarray] | str:
    """(images/s, vectors in ``order``) of ``clip-retrieval inference``, or why it could not run.

    Its command pays imports, model load and a warm-up on every start (~15 s here), which the other
    contenders' rates exclude. So it runs twice, on the folder and on a few of its images
    (``startup_folder``), and the rate is the difference: (n - k) / (t_n - t_k).
    """
    import pyarrow.parquet as pq

    weights = export / "open_clip_model.safetensors"
    small = _clip_retrieval_once(python, model, weights, startup_folder, out / "startup")
    full = _clip_retrieval_once(python, model, weights, folder, out / "full")
    for outcome in (small, full):
        if isinstance(outcome, str):
            return outcome
    found = sorted((out / "full").rglob("img_emb*.npy"))
    if not found:
        return "clip-retrieval wrote no img_emb .npy"
    vectors = np.concatenate([np.load(f) for f in found]).astype(np.float32)
    names = [n for f in sorted((out / "full").rglob("metadata*.parquet")) for n in pq.read_table(f)["image_path"].to_pylist()]
    by_name = dict(zip((os.path.realpath(n) for n in names), vectors))
    ordered = np.array([by_name[os.path.realpath(p)] for p in order]) if len(by_name) == len(order) else vectors
    k = sum(1 for p in startup_folder.rglob("*") if p.is_file())
    return (len(vectors) - k) / (full[0] - small[0]), ordered


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images [default: 500; smoke: 12]")
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) instead of generated images")
    parser.add_argument("--model", help="model spec [default: ViT-B-32:random; smoke: clip-ingest-tiny:random]")
    parser.add_argument("--clip-retrieval-python", help="python of an environment with clip-retrieval installed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2, help="decode processes of the int8 + processes contender")
    parser.add_argument("--repeats", type=int, help="interleaved rounds [default: 2; smoke: 1]")
    parser.add_argument("--load", choices=("quiet", "busy"), default="quiet",
                        help="busy: every contender runs beside one busy single-threaded numpy loop per CPU "
                        "(common.competing_load), as other jobs of a shared machine [default: quiet]")
    args = parser.parse_args(argv)
    args.n = args.n or (12 if args.smoke else 500)
    args.model = args.model or ("clip-ingest-tiny:random" if args.smoke else "ViT-B-32:random")
    args.repeats = args.repeats or (1 if args.smoke else 2)
    from clip_ingest.model.export import export_model

    work = common.Workdir.create(args.workdir)
    os.environ.setdefault("CLIP_INGEST_CACHE", str(work.path / "cache"))
    samples: dict[str, list[float]] = {}
    vectors: dict[str, np.ndarray] = {}
    notes: list[str] = []
    try:
        paths, source = common.input_images(args.images, args.n, work.path / "images", 256)
        export = export_model(args.model, work.path / "weights", onnx=True).path  # one set of weights for all
        ours = {f"clip-ingest {name}": load_embedder(str(export), runtime=r, quantize=q, device="cpu", batch_size=args.batch_size)
                for name, (r, q) in {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}.items()}
        ordered = sorted(str(p) for p in paths)
        for name, embedder in ours.items():
            vectors[name] = embedder.embed_images(ordered)
        fe_folder = fastembed_folder(export, work.path / "fastembed-model")
        startup = work.path / "images-startup"  # clip-retrieval's start-up cost is measured on these
        common.real_images(str(work.path / "images"), STARTUP_IMAGES, startup)
        # busy: the neighbours run through every round, so each contender meets the same load
        with common.competing_load() if args.load == "busy" else contextlib.nullcontext():
            for round_no in range(args.repeats):
                for name, embedder in ours.items():
                    samples.setdefault(f"{name} forward bound", []).append(forward_throughput(embedder, paths, len(paths), args.batch_size))
                    samples.setdefault(name, []).append(ingest_throughput(
                        embedder, work.path / "images", "qdrant-local", work.path / "db" / name.replace(" ", "-"),
                        collection_name("peer", name, round_no), args.workers, args.batch_size, None))
                # the fastest runtime once more with the decode stage in processes (--executor processes)
                samples.setdefault(PROCESSES, []).append(ingest_throughput(
                    ours["clip-ingest onnx-int8"], work.path / "images", "qdrant-local", work.path / "db" / "int8-processes",
                    collection_name("peer", PROCESSES, round_no), args.workers, args.batch_size, None,
                    ProcessExecutor(workers=args.processes)))
                rate, fe_vectors = fastembed_run(fe_folder, ordered, work.path / "db" / f"fastembed-{round_no}", args.batch_size,
                                                 ours["clip-ingest torch"].dim)
                samples.setdefault("fastembed", []).append(rate)
                vectors["fastembed"] = fe_vectors
                if args.clip_retrieval_python:
                    outcome = clip_retrieval_run(args.clip_retrieval_python, args.model, export, work.path / "images", startup,
                                                 work.path / f"cr-{round_no}", ordered)
                    if isinstance(outcome, str):
                        notes.append(outcome)
                    else:
                        samples.setdefault("clip-retrieval", []).append(outcome[0])
                        vectors["clip-retrieval"] = outcome[1]
        if not args.clip_retrieval_python:
            notes.append("clip-retrieval: not measured (give --clip-retrieval-python of an environment that has it)")
    finally:
        work.close()
    reference = vectors["clip-ingest torch"]
    rows = []
    for name, values in samples.items():
        row: dict[str, Any] = {"contender": name, "images_per_s": common.median(values), "rounds": len(values),
                               "cos_min": "-", "cos_mean": "-", "share_below_0_9999": "-"}
        if name in vectors and len(vectors[name]) == len(reference):
            cos = np.sum(vectors[name] * reference, axis=1) / np.linalg.norm(vectors[name], axis=1)
            row.update(cos_min=float(cos.min()), cos_mean=float(cos.mean()), share_below_0_9999=float(np.mean(cos < 0.9999)))
        rows.append(row)
    rate = {r["contender"]: r["images_per_s"] for r in rows}
    best = max([*ours, PROCESSES], key=lambda n: rate[n])
    bound = rate[f"{'clip-ingest onnx-int8' if best == PROCESSES else best} forward bound"]
    ratios = [common.Ratio(f"{best} / its forward bound", rate[best] / bound, 0.9)]
    default = "clip-ingest onnx"  # what --runtime auto runs for the race's export (it carries ONNX towers)
    ratios.append(common.Ratio("default runtime (onnx fp32) / its forward bound", rate[default] / rate[f"{default} forward bound"],
                               0.95 if args.load == "quiet" else None))
    if "fastembed" in rate:
        ratios.append(common.Ratio(f"{best} / fastembed", rate[best] / rate["fastembed"], 1.5))
        ratios.append(common.Ratio("default runtime (onnx fp32) / fastembed", rate[default] / rate["fastembed"],
                                   1.0 if args.load == "busy" else None))
        ratios.append(common.Ratio("clip-ingest torch / fastembed", rate["clip-ingest torch"] / rate["fastembed"]))
    if "clip-retrieval" in rate:
        ratios.append(common.Ratio(f"{best} / clip-retrieval", rate[best] / rate["clip-retrieval"], 1.0))
    config = {"images": len(paths), "source": source, "model": args.model, "batch_size": args.batch_size,
              "workers": args.workers, "repeats": args.repeats, "best_runtime": best, "load": args.load}
    return common.report("peers", config, {"end to end images/s (median of rounds), agreement with torch": rows},
                         ratios, args.json, notes)


if __name__ == "__main__":
    main()
