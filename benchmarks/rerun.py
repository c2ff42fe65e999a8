"""Re-run cost: a first ingestion vs a second run with nothing changed vs one with 1% of files changed.

Run ``python -m benchmarks.rerun`` (``--n 10000`` for the full-size run). Per target, in one
process: ingest ``n`` generated files into a fresh collection, run again unchanged (every file
must be skipped by size + mtime without being read), then rewrite 1% of the files with new
content and run again (only those are re-embedded). Targets: unchanged <= 2% and 1%-changed
<= 5% of the first run's time.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.ingest.summary import RunStats
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

from . import common
from .ingest import TINY, collection_name


def rewrite(paths: Sequence[Path], salt: int, size: int) -> None:
    """Give each file new content (same path, new bytes, new mtime)."""
    rng = np.random.default_rng(salt)
    for i, path in enumerate(paths):
        common.synthetic_image(salt + i, size, rng).save(path, "JPEG", quality=90)


def measure_target(
    embedder: OpenClipEmbedder, target: str, paths: Sequence[Path], folder: Path, work: Path,
    args: Any, salt: int,
) -> dict[str, Any]:
    """Times of the three runs into one target, with the counts that prove what each run did."""
    collection = collection_name("rerun", target)
    store = common.open_target(target, work / "db" / target, collection, args.milvus_uri)
    options = IngestOptions(
        collection=collection, directories=[str(folder)], workers=args.workers, batch_size=args.batch_size,
        max_batch_bytes=common.write_batch_bytes(target), progress=False,
    )
    changed = random.Random(salt).sample(list(paths), max(1, len(paths) // 100))
    try:
        first_s, first = common.timed(lambda: run_ingest(store, embedder, IngestOptions(**{**vars(options), "recreate": True})))
        same_s, same = common.timed(lambda: run_ingest(store, embedder, options))
        rewrite(changed, salt, args.size)
        changed_s, after = common.timed(lambda: run_ingest(store, embedder, options))
    finally:
        store.close()
    check(target, len(paths), len(changed), first, same, after)
    return {
        "target": target, "files": len(paths), "first_s": first_s, "unchanged_s": same_s,
        "changed_files": len(changed), "changed_s": changed_s,
        "unchanged_skipped": same.unchanged, "changed_embedded": after.embedded,
    }


def check(target: str, n: int, k: int, first: RunStats, same: RunStats, after: RunStats) -> None:
    """Fail loudly when a run did not do what its timing claims to measure."""
    if first.embedded != n or same.unchanged != n or same.embedded or after.embedded != k:
        raise RuntimeError(
            f"{target}: unexpected run counts: first embedded {first.embedded}/{n}, unchanged run skipped "
            f"{same.unchanged}/{n} and embedded {same.embedded}, 1% run embedded {after.embedded}/{k}"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="files [default: 2000; smoke: 30; full: 10000]")
    parser.add_argument("--model", default=TINY, help=f"model spec [default: {TINY}]")
    parser.add_argument("--size", type=int, default=64, help="side of generated images [default: 64]")
    parser.add_argument("--targets", nargs="+", help="targets [default: all embedded ones + milvus-server with a URI]")
    parser.add_argument("--workers", type=int, default=IngestOptions.workers)
    parser.add_argument("--batch-size", type=int, default=IngestOptions.batch_size)
    args = parser.parse_args(argv)
    args.n = args.n or (30 if args.smoke else 2000)
    args.targets = args.targets or common.targets(args.milvus_uri)
    embedder = OpenClipEmbedder(args.model, device="cpu", batch_size=args.batch_size)
    work = common.Workdir.create(args.workdir)
    try:
        folder = work.path / "images"
        paths = common.generate_images(folder, args.n, size=args.size)
        rows = [measure_target(embedder, t, paths, folder, work.path, args, salt=10**6 * (i + 1))
                for i, t in enumerate(args.targets)]
    finally:
        work.close()
    ratios = []
    for row in rows:
        ratios.append(common.Ratio(f"{row['target']}: unchanged run / first run", row["unchanged_s"] / row["first_s"], 0.02, at_most=True))
        ratios.append(common.Ratio(f"{row['target']}: 1%-changed run / first run", row["changed_s"] / row["first_s"], 0.05, at_most=True))
    config = {"files": args.n, "model": args.model, "image_size": args.size, "targets": args.targets,
              "workers": args.workers, "batch_size": args.batch_size}
    return common.report("re-run cost", config, {"run times (s)": rows}, ratios, args.json)


if __name__ == "__main__":
    main()
