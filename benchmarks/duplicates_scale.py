"""Near-duplicate finding at scale: ``find_groups`` over N stored points (default 100,000).

Run ``python -m benchmarks.duplicates_scale`` (``--n 100000 --targets qdrant-edge``). No model
runs: N unit vectors of ``--dim`` (512, what a ViT-B-32 gives) are written into a fresh
collection, random directions (unrelated images: cosines near 0) plus ``--groups`` planted groups
of 2-5 copies within cosine ~0.995 of their leader (the spread of edited copies under the
starter). :func:`find_groups` then runs at a raw threshold of 0.98 with k = 10, as ``clip-search
duplicates`` does: batched reads of the stored vectors and one k-NN search per point. Reported
per target: seconds to write and to find, points per second of the finder, this process's RSS
before and after the finder and its peak, and the pair precision / recall of the planted groups.
The finder keeps one batch of vectors and each point's few neighbours, never an all-pairs
matrix, so its memory must grow with N by a few hundred bytes per point, not N².
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.backends.base import CollectionSpec, Point
from clip_ingest.connectors.search.duplicates import find_groups

from . import common
from .memory import peak_rss_mb

THRESHOLD = 0.98
WRITE_BATCH = 1000


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def planted_vectors(n: int, dim: int, groups: int, seed: int = 0) -> tuple[np.ndarray, list[set[int]]]:
    """``n`` unit rows: random directions, the last rows being ``groups`` planted groups of copies."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    truth, row = [], n
    sigma = 0.1 / np.sqrt(dim)  # cosine ~ 1 / sqrt(1 + sigma^2 dim) = 0.995 to the leader
    for size in rng.integers(2, 6, groups):
        row -= int(size)
        leader = vectors[row] / np.linalg.norm(vectors[row])
        for i in range(row, row + int(size)):
            vectors[i] = leader + sigma * rng.standard_normal(dim).astype(np.float32) * (i > row)
        truth.append(set(range(row, row + int(size))))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, truth


def write(store: Any, vectors: np.ndarray, collection: str) -> list[str]:
    """Write the rows as points with the payload fields the finder lists; returns their ids."""
    store.ensure_collection(CollectionSpec(collection, vectors.shape[1], "synthetic@benchmark"))
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{collection}/{i}")) for i in range(len(vectors))]
    for start in range(0, len(vectors), WRITE_BATCH):
        store.upsert([Point(ids[i], vectors[i], {"path": f"/synthetic/{i:07d}.jpg",
                                                 "sha256": hashlib.sha256(str(i).encode()).hexdigest()})
                      for i in range(start, min(start + WRITE_BATCH, len(vectors)))])
    store.flush()
    return ids


def pair_scores(found: list[set[str]], truth: list[set[str]]) -> tuple[float, float]:
    def pairs(groups: Any) -> set[tuple[str, str]]:
        return {(a, b) for g in groups for a in g for b in g if a < b}

    got, want = pairs(found), pairs(truth)
    return (len(got & want) / len(got) if got else 1.0), (len(got & want) / len(want) if want else 1.0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="stored points [default: 100000; smoke: 400]")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--groups", type=int, help="planted groups [default: n / 100]")
    parser.add_argument("--targets", nargs="+", default=["qdrant-edge"], help="stores [default: qdrant-edge]")
    args = parser.parse_args(argv)
    args.n = args.n or (400 if args.smoke else 100_000)
    args.groups = args.groups or max(2, args.n // 100)
    work = common.Workdir.create(args.workdir)
    rows = []
    try:
        vectors, truth = planted_vectors(args.n, args.dim, args.groups)
        for target in args.targets:
            store = common.open_target(target, work.path / target, "dups", args.milvus_uri, timeout=120.0)
            try:
                write_s, ids = common.timed(lambda: write(store, vectors, "dups"))
                before = rss_mb()
                find_s, groups = common.timed(lambda: find_groups(store, THRESHOLD, k=10))
                after = rss_mb()
            finally:
                store.close()
            precision, recall = pair_scores([{p.id for p in g.members} for g in groups], [{ids[i] for i in g} for g in truth])
            rows.append({"target": target, "points": args.n, "planted_groups": len(truth), "groups_found": len(groups),
                         "write_s": write_s, "find_s": find_s, "find_points_per_s": args.n / find_s,
                         "rss_before_find_mb": before, "rss_after_find_mb": after, "peak_rss_mb": peak_rss_mb(),
                         "pair_precision": precision, "pair_recall": recall})
    finally:
        work.close()
    config = {"points": args.n, "dim": args.dim, "groups": args.groups, "threshold": THRESHOLD, "k": 10}
    return common.report("duplicates_scale", config, {"find_groups at scale": rows}, [], args.json)


if __name__ == "__main__":
    main()
