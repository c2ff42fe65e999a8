"""Query latency: Searcher.search_text / search_image, split into encoder and database time, plus recall@10.

Run ``python -m benchmarks.query`` (``--sizes 10000 100000`` for the full run). Each target
gets ``size`` synthetic random unit vectors with payloads (upserted directly, nothing is
embedded); then, per query and in shuffled order, it times: the text / image encoder alone,
the database search alone (with and without a filter) and the full ``Searcher`` call. Target:
p50 of a text query <= 1.2 x (p50 encoder + p50 database). Recall@10 of each backend is
measured against exact numpy search over the same vectors and filter.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Callable, Sequence

import numpy as np

from clip_ingest.connectors.backends.base import CollectionSpec, Point, VectorStore
from clip_ingest.connectors.embedder import l2_normalise
from clip_ingest.connectors.ingest.writer import make_retrying
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.filters import parse_filter
from clip_ingest.connectors.search.searcher import Searcher

from . import common
from .ingest import TINY, collection_name

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
#: selects 1/12 of the points
FILTER_TEXT = 'colour = "red" and shape = "circle"'
INDEXED = {"colour": "keyword", "shape": "keyword"}
#: selects 20 points, scattered: the case where post-filtered ANN candidates come back short
RARE_FILTER_TEXT = "index < 20"
UPSERT_CHUNK = 1000
WARMUP = 3


def synthetic_points(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """``n`` random unit vectors, payloads with colour / shape / index, and point ids."""
    rng = np.random.default_rng(seed)
    vectors = l2_normalise(rng.standard_normal((n, dim), dtype=np.float32))
    payloads = [{"path": f"/bench/{i:07d}.jpg", "colour": COLOURS[i % 4], "shape": SHAPES[i % 3], "index": i} for i in range(n)]
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    return vectors, payloads, ids


def fill(store: VectorStore, spec: CollectionSpec, vectors: np.ndarray, payloads: list[dict], ids: list[str]) -> None:
    """Create the collection afresh and upsert every point in chunks.

    Writes are retried on transient errors as ingestion does (Milvus Lite can time out an
    upsert while it compacts a large collection in the background).
    """
    retrying = make_retrying()
    retrying(store.ensure_collection, spec, recreate=True)
    for start in range(0, len(ids), UPSERT_CHUNK):
        end = start + UPSERT_CHUNK
        retrying(store.upsert, [Point(i, v, p) for i, v, p in zip(ids[start:end], vectors[start:end], payloads[start:end])])
    retrying(store.flush)
    wait_until_indexed = getattr(store, "wait_until_indexed", None)  # a Milvus server indexes in the background
    if wait_until_indexed is not None and not wait_until_indexed():
        raise RuntimeError(f"{store!r}: the vector index was not built in time")


def exact_top_k(vectors: np.ndarray, mask: np.ndarray | None, query: np.ndarray, k: int) -> set[int]:
    """Indices of the exact ``k`` nearest rows by cosine similarity among ``mask``."""
    scores = vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return set(np.argsort(-scores)[:k].tolist())


def measure(
    store: VectorStore, embedder: OpenClipEmbedder, vectors: np.ndarray, payloads: list[dict],
    ids: list[str], queries: int, k: int, seed: int = 0,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latency samples (seconds) per measurement name, and recall@k without / with the filter.

    The database alone is timed, and its recall measured, with random unit query vectors: the
    encoder of a random-weight model maps all texts to nearly one direction, whose near-ties
    would make recall measure rounding instead of the index.
    """
    searcher = Searcher(store, embedder)
    flt = parse_filter(FILTER_TEXT)
    rare = parse_filter(RARE_FILTER_TEXT)
    mask = np.array([p["colour"] == "red" and p["shape"] == "circle" for p in payloads])
    rare_mask = np.array([p["index"] < 20 for p in payloads])
    index_of = {pid: i for i, pid in enumerate(ids)}
    rng = random.Random(seed)
    texts = [f"a photo of a {rng.choice(COLOURS)} {rng.choice(SHAPES)} number {i}" for i in range(queries + WARMUP)]
    images = [common.synthetic_image(i, 96, np.random.default_rng(i)) for i in range(queries + WARMUP)]
    probes = l2_normalise(np.random.default_rng(seed + 1).standard_normal((len(texts), vectors.shape[1]), dtype=np.float32))
    samples: dict[str, list[float]] = {}
    hits_found = {"no filter": 0, "filter": 0, "rare filter": 0}
    for q, (text, image, vector) in enumerate(zip(texts, images, probes)):
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("text encoder", lambda: embedder.embed_texts([text])),
            ("image encoder", lambda: embedder.embed_images([image])),
            ("database", lambda: store.search(vector, k=k)),
            ("database+filter", lambda: store.search(vector, k=k, filter=flt)),
            ("database+rare filter", lambda: store.search(vector, k=k, filter=rare)),
            ("search_text", lambda: searcher.search_text(text, k=k)),
            ("search_text+filter", lambda: searcher.search_text(text, k=k, filter=flt)),
            ("search_image", lambda: searcher.search_image(image, k=k)),
            ("search_image+filter", lambda: searcher.search_image(image, k=k, filter=flt)),
        ]
        rng.shuffle(steps)
        for name, step in steps:
            seconds, result = common.timed(step)
            if q >= WARMUP:
                samples.setdefault(name, []).append(seconds)
            if q >= WARMUP and name.startswith("database"):
                key, m = {"database": ("no filter", None), "database+filter": ("filter", mask),
                          "database+rare filter": ("rare filter", rare_mask)}[name]
                hits_found[key] += len({index_of[h.id] for h in result} & exact_top_k(vectors, m, vector, k))
    recall = {key: found / (queries * k) for key, found in hits_found.items()}
    return samples, recall


def rows_for(target: str, size: int, samples: dict[str, list[float]], recall: dict[str, float]) -> list[dict[str, Any]]:
    """One row per query kind and filter: full-call percentiles next to its parts' p50 (milliseconds)."""
    p50 = {name: float(np.median(values)) * 1000 for name, values in samples.items()}
    rows = []
    for kind in ("text", "image"):
        for suffix, label in (("", "no"), ("+filter", "yes")):
            pct = common.percentiles([s * 1000 for s in samples[f"search_{kind}{suffix}"]])
            rows.append({
                "target": target, "points": size, "query": kind, "filter": label,
                "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"],
                "encoder_p50_ms": p50[f"{kind} encoder"], "database_p50_ms": p50[f"database{suffix}"],
                "recall@10": recall["filter" if suffix else "no filter"],
            })
    pct = common.percentiles([s * 1000 for s in samples["database+rare filter"]])
    rows.append({
        "target": target, "points": size, "query": "vector", "filter": f"rare ({RARE_FILTER_TEXT})",
        "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"], "encoder_p50_ms": 0.0,
        "database_p50_ms": p50["database+rare filter"], "recall@10": recall["rare filter"],
    })
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="collection sizes [default: 10000; smoke: 300; full: 10000 100000]")
    parser.add_argument("--queries", type=int, help="timed queries per size and target [default: 50; smoke: 5]")
    parser.add_argument("--model", help=f"model spec [default: ViT-B-32:random; smoke: {TINY}]")
    parser.add_argument("--targets", nargs="+", help="targets [default: all embedded ones + milvus-server with a URI]")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--milvus-consistency", default="Strong", help="consistency of Milvus searches [default: Strong]")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([300] if args.smoke else [10_000])
    args.queries = args.queries or (5 if args.smoke else 50)
    args.model = args.model or (TINY if args.smoke else "ViT-B-32:random")
    args.targets = args.targets or common.targets(args.milvus_uri)
    embedder = OpenClipEmbedder(args.model, device="cpu", batch_size=1)
    rows: list[dict[str, Any]] = []
    work = common.Workdir.create(args.workdir)
    try:
        for size in args.sizes:
            vectors, payloads, ids = synthetic_points(size, embedder.dim)
            for target in args.targets:
                name = collection_name("query", size)
                store = common.open_target(
                    target, work.path / "db" / target, name, args.milvus_uri, args.milvus_consistency, timeout=120.0
                )
                try:
                    fill(store, CollectionSpec(name, embedder.dim, embedder.model_id, INDEXED), vectors, payloads, ids)
                    samples, recall = measure(store, embedder, vectors, payloads, ids, args.queries, args.k)
                finally:
                    store.close()
                rows.extend(rows_for(target, size, samples, recall))
    finally:
        work.close()
    ratios = [
        common.Ratio(
            f"{r['target']} @{r['points']} filter={r['filter']}: text p50 / (encoder + database)",
            r["p50_ms"] / (r["encoder_p50_ms"] + r["database_p50_ms"]), 1.2, at_most=True,
        )
        for r in rows if r["query"] == "text"
    ]
    config = {"sizes": args.sizes, "queries": args.queries, "model": args.model, "dim": embedder.dim,
              "k": args.k, "filter": FILTER_TEXT, "rare_filter": RARE_FILTER_TEXT, "targets": args.targets, "milvus_consistency": args.milvus_consistency}
    return common.report("query latency", config, {"latency (ms) and recall@10": rows}, ratios, args.json)


if __name__ == "__main__":
    main()
