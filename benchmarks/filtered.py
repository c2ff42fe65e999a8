"""Filtered vs unfiltered search: p50/p95 latency and recall@k against exact search, per backend and size.

Run ``python -m benchmarks.filtered`` (``--sizes 10000 100000`` by default, ``--backends`` to pick
targets, ``--milvus-uri`` adds the Milvus server). Each backend gets ``size`` random unit vectors
(dim 512) with the payloads of a photo collection: a class keyword ``label`` (one class on 50 %
of the points, one on 5 %, one on 0.5 %, forty others), an integer ``size_kb``, a float
``score`` and a date ``taken_at`` (Unix seconds), all four declared as indexed fields. Stores are
opened through :func:`~clip_ingest.connectors.backends.open_store` as the CLI opens them
(qdrant-client's local mode in memory: its search is the same code as on a folder). Per query
vector, in shuffled order, the database call is timed without a filter and with each filter of
:data:`FILTERS` (keyword, integer, float, date and combined, 50 % to 0.5 % of the points); each
page is compared with the exact top ``k`` of the matching points (numpy over the same vectors and
payloads, masks computed here, not by the filter code). Target: filtered p50 <= 2 x unfiltered
p50 of the same backend and size, and recall as docs/search-correctness.md promises (1.0 on the
exact backends; the Milvus server's graph search at least 0.95 per filter). Milvus Lite gets one
more row for context: the unfiltered search at the ``ef`` its exact filtered searches use.
"""

from __future__ import annotations

import copy
import datetime
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clip_ingest.connectors.backends import CollectionSpec, VectorStore, open_store
from clip_ingest.connectors.backends.milvus.store import LITE_FILTERED_EF, MilvusStore
from clip_ingest.connectors.embedder import l2_normalise
from clip_ingest.connectors.filters import parse_filter

from . import common
from .ingest import collection_name
from .query import fill

DIM = 512
K = 10
WARMUP = 2
#: the class keyword: one class per selectivity the filters need, the rest spread over others
LABEL_SHARES = {"common": 0.5, "uncommon": 0.05, "rare": 0.005}
OTHER_LABELS = tuple(f"other_{i:02d}" for i in range(40))
#: ``taken_at`` spans these days from this date (Unix seconds, one point per second at random)
FIRST_DAY = datetime.date(2023, 1, 1)
DAYS = 1000
INDEXED = {"label": "keyword", "size_kb": "integer", "score": "float", "taken_at": "float"}  # dates are Unix seconds: docs/filters.md indexes them as float
#: backends the exact ranking must be matched by exactly (docs/search-correctness.md)
EXACT_BACKENDS = ("qdrant-edge", "qdrant-local", "milvus-lite")
#: recall the Milvus server's filtered graph search promises, mean per filter
APPROXIMATE_RECALL = 0.95
RATIO_TARGET = 2.0
#: context row, Milvus Lite only: the unfiltered search at the breadth of its exact filtered searches
WIDE = "unfiltered, ef of filtered"
#: seconds between loading and measuring: Milvus Lite serves freshly sealed segments by brute force
#: for 1-3 s after it reports their indexes built (typed columns measured: recall 1.0 at 1 s, HNSW
#: from 2.7 s), which a search from a later process never sees
SETTLE_S = 5.0


@dataclass(frozen=True)
class Columns:
    """The payload fields as numpy arrays, for the reference masks."""

    label: np.ndarray
    size_kb: np.ndarray
    score: np.ndarray
    taken_at: np.ndarray


def day_seconds(days: int) -> int:
    """Unix seconds at midnight UTC ``days`` after :data:`FIRST_DAY`."""
    day = FIRST_DAY + datetime.timedelta(days=days)
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp())


#: ``(name, filter text, reference mask)``: keyword, integer, float, date and combined filters
FILTERS: tuple[tuple[str, str, Callable[[Columns], np.ndarray]], ...] = (
    ("keyword 50%", 'label = "common"', lambda c: c.label == "common"),
    ("keyword 5%", 'label = "uncommon"', lambda c: c.label == "uncommon"),
    ("keyword 0.5%", 'label = "rare"', lambda c: c.label == "rare"),
    ("integer 5%", "size_kb < 50", lambda c: c.size_kb < 50),
    ("float 0.5%", "score >= 0.995", lambda c: c.score >= 0.995),
    ("date 5%", f"taken_at >= {FIRST_DAY + datetime.timedelta(days=DAYS * 95 // 100)}",
     lambda c: c.taken_at >= day_seconds(DAYS * 95 // 100)),
    ("keyword and integer 5%", 'label = "common" and size_kb < 100', lambda c: (c.label == "common") & (c.size_kb < 100)),
)


def synthetic_collection(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]], list[str], Columns]:
    """``n`` random unit vectors, their payloads, point ids and the payload columns."""
    rng = np.random.default_rng(seed)
    vectors = l2_normalise(rng.standard_normal((n, dim), dtype=np.float32))
    names = [*LABEL_SHARES, *OTHER_LABELS]
    rest = (1.0 - sum(LABEL_SHARES.values())) / len(OTHER_LABELS)
    shares = np.array([*LABEL_SHARES.values(), *([rest] * len(OTHER_LABELS))])
    columns = Columns(
        label=np.array(names)[rng.choice(len(names), size=n, p=shares / shares.sum())],
        size_kb=rng.integers(0, 1000, size=n),
        score=rng.random(n),
        taken_at=day_seconds(0) + rng.integers(0, DAYS * 86_400, size=n),
    )
    payloads = [{"path": f"/photos/{i:07d}.jpg", "label": str(label), "size_kb": int(size_kb), "score": float(score),
                 "taken_at": int(taken_at)}
                for i, (label, size_kb, score, taken_at) in enumerate(zip(columns.label, columns.size_kb, columns.score, columns.taken_at))]
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    return vectors, payloads, ids, columns


def open_backend(backend: str, root: Path, collection: str, milvus_uri: str | None, consistency: str) -> VectorStore:
    """A store for ``backend``, opened as the CLI opens it (``qdrant-local``: qdrant-client in memory)."""
    root.mkdir(parents=True, exist_ok=True)
    if backend == "qdrant-edge":
        return open_store("qdrant", collection, path=str(root / "qdrant-edge"))
    if backend == "qdrant-local":
        return open_store("qdrant", collection, location=":memory:")
    if backend == "milvus-lite":
        return open_store("milvus", collection, uri=str(root / "milvus.db"), search_consistency=consistency, timeout=300.0)
    if backend == "milvus-server":
        if not milvus_uri:
            raise common.BenchmarkInputError(f"backend milvus-server needs --milvus-uri or ${common.MILVUS_URI_ENV}")
        return open_store("milvus", collection, uri=milvus_uri, search_consistency=consistency, timeout=300.0)
    raise common.BenchmarkInputError(f"unknown backend {backend!r}; choose from {', '.join(common.targets('uri'))}")


def exact_top(vectors: np.ndarray, mask: np.ndarray | None, query: np.ndarray, k: int) -> set[int]:
    """Row indices of the exact top ``k`` by cosine among ``mask`` (all rows when None)."""
    scores = vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
        k = min(k, int(mask.sum()))
    return set(np.argpartition(-scores, k - 1)[:k].tolist()) if k else set()


def wide_store(store: VectorStore, size: int) -> VectorStore | None:
    """The same Milvus Lite store searching at the breadth its filtered searches use (``ef`` of the
    collection's size, up to ``LITE_FILTERED_EF``), for the :data:`WIDE` row; None elsewhere."""
    if not isinstance(store, MilvusStore) or not store.is_lite:
        return None
    wide = copy.copy(store)  # shares the connection
    wide.search_ef = min(size, LITE_FILTERED_EF)
    return wide


def measure(store: VectorStore, vectors: np.ndarray, ids: list[str], columns: Columns, queries: np.ndarray,
            k: int, seed: int = 0, wide: VectorStore | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """Per measurement (``"unfiltered"``, :data:`WIDE` with a ``wide`` store, and every filter's
    name): seconds of each database call and recall@k of its page, the calls of one query vector
    in shuffled order."""
    index_of = {point_id: i for i, point_id in enumerate(ids)}
    cases: list[tuple[str, Any, np.ndarray | None]] = [("unfiltered", None, None)]
    cases += [(WIDE, None, None)] if wide is not None else []
    cases += [(name, parse_filter(text), reference(columns)) for name, text, reference in FILTERS]
    order = random.Random(seed)
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _, _ in cases}
    for q, query in enumerate(queries):
        order.shuffle(cases)
        for name, flt, mask in cases:
            searcher = wide if name == WIDE and wide is not None else store
            seconds, hits = common.timed(lambda: searcher.search(query, k=k, filter=flt))
            if q < WARMUP:
                continue
            expected = exact_top(vectors, mask, query, k)
            samples[name][0].append(seconds)
            found = len({index_of[h.id] for h in hits} & expected)
            samples[name][1].append(found / len(expected) if expected else float(not hits))
    return samples


def rows_for(backend: str, size: int, samples: dict[str, tuple[list[float], list[float]]], columns: Columns) -> list[dict[str, Any]]:
    """One row per measurement: matches, p50/p95 ms, p50 / unfiltered p50, recall mean and least."""
    base = common.median(samples["unfiltered"][0])
    load = round(os.getloadavg()[0], 1)
    matches = {"unfiltered": size, WIDE: size, **{name: int(reference(columns).sum()) for name, _, reference in FILTERS}}
    rows = []
    for name, (seconds, recalls) in samples.items():
        pct = common.percentiles([s * 1000 for s in seconds], (50, 95))
        rows.append({"backend": backend, "points": size, "filter": name, "matches": matches[name],
                     "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p50/unfiltered": common.median(seconds) / base,
                     "recall": float(np.mean(recalls)), "least_recall": float(np.min(recalls)), "load1": load})
    return rows


def side_by_side(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backend and size: unfiltered p50 ms, each filter's p50 / unfiltered p50, and
    the least mean recall over the filters."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        line = out.setdefault((r["backend"], r["points"]), {"backend": r["backend"], "points": r["points"]})
        if r["filter"] == "unfiltered":
            line["unfiltered_p50_ms"] = r["p50_ms"]
        elif r["filter"] == WIDE:
            line["unfiltered_at_filtered_ef"] = r["p50/unfiltered"]
        else:
            line[r["filter"]] = r["p50/unfiltered"]
            line["least_recall"] = min(line.get("least_recall", 1.0), r["recall"])
    return list(out.values())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="collection sizes [default: 10000 100000; smoke: 200]")
    parser.add_argument("--queries", type=int, help=f"timed query vectors per backend and size (+{WARMUP} warm-up) [default: 20; smoke: 3]")
    parser.add_argument("--backends", nargs="+", help="qdrant-edge, qdrant-local, milvus-lite, milvus-server "
                        "[default: the embedded ones + milvus-server with a URI]")
    parser.add_argument("--dim", type=int, help=f"vector dimension [default: {DIM}; smoke: 16]")
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--milvus-consistency", default="Bounded",
                        help="consistency of Milvus searches [default: Bounded: a Strong search waits for the "
                             "server's time tick (~0.3 s) whatever it searches, which hides the search itself]")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([200] if args.smoke else [10_000, 100_000])
    args.queries = args.queries or (3 if args.smoke else 20)
    args.dim = args.dim or (16 if args.smoke else DIM)
    args.backends = args.backends or common.targets(args.milvus_uri)
    queries = l2_normalise(np.random.default_rng(1).standard_normal((args.queries + WARMUP, args.dim), dtype=np.float32))
    rows: list[dict[str, Any]] = []
    work = common.Workdir.create(args.workdir)
    try:
        for size in args.sizes:
            vectors, payloads, ids, columns = synthetic_collection(size, args.dim)
            for backend in args.backends:
                name = collection_name("filtered", size)
                store = open_backend(backend, work.path / "db" / backend, name, args.milvus_uri, args.milvus_consistency)
                try:
                    fill(store, CollectionSpec(name, args.dim, "random-unit-vectors", INDEXED), vectors, payloads, ids)
                    time.sleep(0 if args.smoke else SETTLE_S)
                    samples = measure(store, vectors, ids, columns, queries, args.k, wide=wide_store(store, size))
                finally:
                    store.close()
                rows.extend(rows_for(backend, size, samples, columns))
                print(common.format_table(rows[-len(samples):]), flush=True)
    finally:
        work.close()
    filtered = [r for r in rows if r["filter"] not in ("unfiltered", WIDE)]
    ratios = [common.Ratio(f"{r['backend']} @{r['points']} {r['filter']}: p50 / unfiltered", r["p50/unfiltered"],
                           RATIO_TARGET, at_most=True) for r in filtered]
    ratios += [common.Ratio(f"{r['backend']} @{r['points']} {r['filter']}: recall@{args.k}", r["recall"],
                            1.0 if r["backend"] in EXACT_BACKENDS else APPROXIMATE_RECALL) for r in filtered]
    config = {"sizes": args.sizes, "dim": args.dim, "k": args.k, "queries": args.queries, "backends": args.backends,
              "filters": {name: text for name, text, _ in FILTERS}, "milvus_consistency": args.milvus_consistency}
    tables = {"filtered vs unfiltered (ms) and recall": rows, "p50 / unfiltered p50, side by side": side_by_side(rows)}
    return common.report("filtered search", config, tables, ratios, args.json)


if __name__ == "__main__":
    main()
