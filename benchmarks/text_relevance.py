"""Text relevance on real collections: what ``--min-relevance`` keeps, and how precise it is.

Run ``python -m benchmarks.text_relevance --caltech /work/shared/data/caltech101 --flickr8k
/work/shared/data/flickr8k`` (about 5 minutes on 2 cores). Each collection is ingested into a
fresh Qdrant Edge collection and searched through :class:`Searcher` with ``min_relevance`` as
``clip-search query --text ... --min-relevance R`` does (k = the whole collection, so the cut
alone decides what is kept):

* Caltech-101, all 8,677 photos; one query per class, "a photo of a <class>", a hit relevant
  when it is of that class (``Faces`` and ``Faces_easy`` one class);
* Flickr8k's 1,000 test images; the first caption of each as a query, relevant: its own image.

Reported per model and cut: hits kept per query, precision of the kept hits (pooled), recall,
queries with any hit. A model without a text calibration (the random initialisation) refuses
``min_relevance`` for text; its row says so. ``--smoke`` searches a few generated images in
Caltech's layout (:func:`common.class_folders`) with the starter.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.search.searcher import Searcher

from . import common

CUTS = (0.3, 0.5, 0.7, 0.9)


def caltech_queries(root: Path) -> tuple[list[str], list[set[str]], list[str]]:
    """(folders to ingest, relevant file names per query, queries): one per class."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    merged = {"Faces_easy": "Faces"}
    kinds = sorted({merged.get(c, c) for c in classes})
    relevant = [{str(f.resolve()) for c in classes if merged.get(c, c) == kind for f in (root / c).glob("*.jpg")} for kind in kinds]
    return [str(root)], relevant, [f"a photo of a {kind.replace('_', ' ').lower()}" for kind in kinds]


def flickr_queries(root: Path) -> tuple[list[str], list[set[str]], list[str]]:
    """(folders, relevant file per query, queries): each image's first caption."""
    first: dict[str, str] = {}
    with open(root / "captions.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            first.setdefault(row["image"], row["caption"])
    images = sorted(first)
    return [str(root)], [{str((root / "images" / name).resolve()) if (root / "images").is_dir() else str((root / name).resolve())}
                         for name in images], [first[name] for name in images]


def measure(model: str, name: str, folders: list[str], relevant: list[set[str]], queries: list[str],
            root: Path) -> list[dict[str, Any]]:
    embedder = OpenClipEmbedder(model, device="cpu")
    collection = "text_" + "".join(ch if ch.isalnum() else "_" for ch in f"{name}_{model}")
    rows = []
    with open_store("qdrant-edge", collection, path=str(root / collection)) as store:
        run_ingest(store, embedder, IngestOptions(collection=collection, directories=folders, progress=False))
        size = store.count()
        searcher = Searcher(store, embedder)
        for cut in CUTS:
            try:
                found = searcher.search_texts(queries, k=size, min_relevance=cut)
            except ValueError as exc:
                rows.append({"set": name, "model": model, "cut": cut, "kept per query": "-",
                             "precision": "refused: " + str(exc).split("(")[0].strip()})
                break
            kept = [{str(Path(h.payload["path"]).resolve()) for h in hits} for hits in found]
            hits = sum(len(k & r) for k, r in zip(kept, relevant))
            total = sum(len(k) for k in kept)
            rows.append({"set": name, "model": model, "cut": cut, "kept per query": round(total / len(queries), 2),
                         "precision": round(hits / total, 3) if total else "-",
                         "recall": round(hits / sum(len(r) for r in relevant), 3),
                         "queries with hits": sum(bool(k) for k in kept), "queries": len(queries)})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--caltech", help="the Caltech-101 folder (../shared/data/caltech101)")
    parser.add_argument("--flickr8k", help="the Flickr8k evaluation folder (../shared/data/flickr8k)")
    parser.add_argument("--models", nargs="+", help="[default: starter clip-ingest-photo-s:random; smoke: starter]")
    args = parser.parse_args(argv)
    args.models = args.models or (["starter"] if args.smoke else ["starter", "clip-ingest-photo-s:random"])
    work = common.Workdir.create(args.workdir)
    if args.smoke and not (args.caltech or args.flickr8k):
        args.caltech = str(common.class_folders(work.path / "caltech"))
    sets = [(name, loader(Path(folder))) for name, loader, folder in (("caltech101", caltech_queries, args.caltech),
                                                                      ("flickr8k", flickr_queries, args.flickr8k)) if folder]
    if not sets:
        work.close()
        raise common.BenchmarkInputError("give --caltech and/or --flickr8k")
    rows: list[dict[str, Any]] = []
    try:
        for name, (folders, relevant, queries) in sets:
            for model in args.models:
                rows += measure(model, name, folders, relevant, queries, work.path / "db")
    finally:
        work.close()
    return common.report("text_relevance", {"cuts": CUTS, "models": args.models}, {"text relevance at each cut": rows}, [],
                         args.json)


if __name__ == "__main__":
    main()
