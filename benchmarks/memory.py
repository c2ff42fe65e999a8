"""Memory: peak RSS of ingesting many small images stays flat (bounded queues), at two sizes.

Run ``python -m benchmarks.memory`` (``--sizes 10000 100000`` for the full run). Each size is
ingested by its own fresh subprocess (``--child``; they run concurrently, peaks are per
process); each reports its peak RSS
before the run (interpreter, torch, model, store) and after it. With bounded buffers the growth
of the run must not scale with the number of images beyond the per-file bookkeeping (paths seen,
stored state); the ratio reported is peak RSS at the larger size / at the smaller one (flat: ~1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from . import common
from .ingest import TINY

REPO_ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Read from ``VmHWM`` (reset by exec) rather than ``getrusage``, whose ``ru_maxrss`` a
    child started by fork + exec inherits from its parent.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def child(folder: str, target: str, root: str) -> dict[str, Any]:
    """Ingest ``folder`` into ``target`` under ``root``; returns the peak RSS before and after."""
    from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
    from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

    embedder = OpenClipEmbedder(TINY, device="cpu")
    store = common.open_target(target, Path(root), "memory")
    options = IngestOptions(collection="memory", directories=[folder], recreate=True, progress=False,
                            max_batch_bytes=common.write_batch_bytes(target))
    before = peak_rss_mb()
    try:
        stats = run_ingest(store, embedder, options)
    finally:
        store.close()
    return {"embedded": stats.embedded, "peak_before_mb": before, "peak_after_mb": peak_rss_mb()}


def run_children(jobs: Sequence[tuple[Path, Path]], target: str) -> list[dict[str, Any]]:
    """Run :func:`child` for each ``(folder, root)`` in its own fresh interpreter, concurrently
    (peaks are per process, so they do not mix), and parse each one's JSON line."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory", "--child", str(folder), "--target", target, "--workdir", str(root)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        for folder, root in jobs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed ({proc.returncode}): {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, help="two image counts [default: 1000 5000; smoke: 20 60; full: 10000 100000]")
    parser.add_argument("--target", default="qdrant-edge", choices=common.EMBEDDED_TARGETS)
    parser.add_argument("--size", type=int, default=32, help="side of the generated images [default: 32]")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, args.target, args.workdir)
        print(json.dumps(result))
        return result
    args.sizes = args.sizes or ([20, 60] if args.smoke else [1000, 5000])
    work = common.Workdir.create(args.workdir)
    rows = []
    try:
        jobs = []
        for n in args.sizes:
            common.generate_images(work.path / f"images-{n}", n, size=args.size, fmt="PNG")
            jobs.append((work.path / f"images-{n}", work.path / f"db-{n}"))
        for n, measured in zip(args.sizes, run_children(jobs, args.target)):
            growth = measured["peak_after_mb"] - measured["peak_before_mb"]
            rows.append({"images": n, **measured, "growth_mb": growth, "growth_kib_per_image": 1024 * growth / n})
    finally:
        work.close()
    small, large = rows
    ratios = [
        common.Ratio("peak RSS, larger / smaller run", large["peak_after_mb"] / small["peak_after_mb"], 1.2, at_most=True),
    ]
    config = {"sizes": args.sizes, "target": args.target, "model": TINY, "image_size": args.size}
    return common.report("ingest memory", config, {"peak RSS (MiB)": rows}, ratios, args.json)


if __name__ == "__main__":
    main()
