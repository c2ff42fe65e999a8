"""The Python API end to end: embed, ingest into an embedded Qdrant, search by text with a filter.

    python examples/python_api.py --query "an apple" --label food

1. ``OpenClipEmbedder`` turns images and texts into L2-normalised vectors of one space;
2. ``run_ingest`` puts every image of a folder into a collection (incremental: a second run
   only embeds new or changed files), with ``label`` = sub-folder name, indexed for filtering;
3. ``Searcher.search_text`` finds the images closest to a text, restricted by a payload filter.
   The filter is built as an AST (``Compare``), never by pasting the user's text into filter syntax.
"""

from __future__ import annotations

from example_common import LABEL_FIELD, common_parser, ingest_folder, open_embedded_qdrant, print_hits

from clip_ingest.connectors import OpenClipEmbedder
from clip_ingest.connectors.filters import Compare
from clip_ingest.connectors.search.searcher import Searcher


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--query", default="an apple", help="text to search for (default: an apple)")
    parser.add_argument("--label", default=None, help="only images whose folder label is this (default: all)")
    args = parser.parse_args(argv)

    embedder = OpenClipEmbedder(args.model, device=args.device)
    vectors = embedder.embed_texts([args.query])
    print(f"model {embedder.model_id}: {vectors.shape[1]}-d vectors, |query| = {float((vectors[0] ** 2).sum()) ** 0.5:.3f}")

    with open_embedded_qdrant(args.data_dir, args.collection) as store:
        stats = ingest_folder(store, embedder, args.photos, args.collection)
        print(f"ingested: {stats.new} new, {stats.unchanged} unchanged, {stats.failed} failed; {store.count()} points")
        label_filter = None if args.label is None else Compare(LABEL_FIELD, "=", args.label)
        hits = Searcher(store, embedder).search_text(args.query, k=args.k, filter=label_filter)
        print_hits(f"top {args.k} for {args.query!r}" + (f" with {LABEL_FIELD} = {args.label!r}" if args.label else ""), hits)


if __name__ == "__main__":
    main()
