"""What the example scripts share: their common options, an embedded Qdrant, one ingestion call, printing hits.

Not an example itself; the scripts beside it import it (a script's folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

from clip_ingest.connectors.backends import Hit, VectorStore, open_store
from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.ingest.summary import RunStats

EXAMPLES_DIR = Path(__file__).resolve().parent
PHOTOS = EXAMPLES_DIR / "photos"

#: the payload field that ``label_from_folder`` fills, indexed so it can be filtered on
LABEL_FIELD = "label"


def common_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with ``--model``, ``--photos``, ``--data-dir``, ``--collection``, ``--device`` and ``-k``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="starter", help="model spec (default: the bundled starter model)")
    parser.add_argument("--photos", default=str(PHOTOS), help="folder of images, one sub-folder per label (default: examples/photos)")
    parser.add_argument("--data-dir", default="clip-ingest-data", help="where the embedded Qdrant lives (default: ./clip-ingest-data)")
    parser.add_argument("--collection", default="examples", help="collection name (default: examples)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    parser.add_argument("-k", type=int, default=3, help="hits to show (default: 3)")
    return parser


def query_parser(description: str | None) -> argparse.ArgumentParser:
    """:func:`common_parser` plus either ``--query`` (a text, default "an apple") or ``--image`` (a picture file)."""
    parser = common_parser(description)
    query = parser.add_mutually_exclusive_group()
    query.add_argument("--query", default="an apple", help="text query (default: an apple)")
    query.add_argument("--image", default=None, help="image query: find the pictures most like this file")
    return parser


def query_title(args: argparse.Namespace) -> str:
    """The heading printed above the hits of a :func:`query_parser` query (image or text)."""
    return f"most like {args.image}:" if args.image else f"top {args.k} for {args.query!r}:"


def open_embedded_qdrant(data_dir: str | os.PathLike, collection: str) -> VectorStore:
    """The embedded Qdrant (no server) that ``clip-ingest --target qdrant`` uses under ``DATA_DIR/qdrant``."""
    return open_store("qdrant", collection, path=str(Path(data_dir) / "qdrant"))


def ingest_folder(store: VectorStore, embedder: Embedder, folder: str, collection: str, *, recreate: bool = False) -> RunStats:
    """Ingest ``folder`` incrementally, labelling each image with its sub-folder name (indexed as a keyword)."""
    options = IngestOptions(
        collection=collection,
        directories=[folder],
        label_from_folder=True,
        index_fields={LABEL_FIELD: "keyword"},
        recreate=recreate,
        progress=False,
    )
    return run_ingest(store, embedder, options)


def print_ranked(title: str, rows: Iterable[tuple[float, str]]) -> None:
    """``title`` then one ``rank. score  path`` line per ``(score, path)`` (the tests read these lines)."""
    print(title)
    for rank, (score, path) in enumerate(rows, 1):
        print(f"  {rank}. {score:.4f}  {path}")


def print_hits(title: str, hits: Iterable[Hit]) -> None:
    """:func:`print_ranked` for clip-ingest search hits (their ``path`` payload field)."""
    print_ranked(title, ((hit.score, hit.payload.get("path")) for hit in hits))
