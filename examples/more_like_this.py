"""Image-to-image "more like this": the stored images most similar to a given one, excluding itself.

    python examples/more_like_this.py --like examples/photos/food/apple_bitten_dan_gerhard_01.png

The folder is ingested first (incremental), then ``Searcher.search_similar`` embeds the image,
recognises its stored copies by the sha256 of its bytes and leaves them out of the hits. ``--like``
also takes the id of a stored point (then its stored vector is used, nothing is embedded).
"""

from __future__ import annotations

from example_common import PHOTOS, common_parser, ingest_folder, open_embedded_qdrant, print_hits

from clip_ingest.connectors import OpenClipEmbedder
from clip_ingest.connectors.search.searcher import Searcher


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument(
        "--like", default=str(PHOTOS / "food" / "apple_bitten_dan_gerhard_01.png"),
        help="an image file or a stored point id (default: a sample apple)",
    )
    args = parser.parse_args(argv)

    embedder = OpenClipEmbedder(args.model, device=args.device)
    with open_embedded_qdrant(args.data_dir, args.collection) as store:
        ingest_folder(store, embedder, args.photos, args.collection)
        hits = Searcher(store, embedder).search_similar(args.like, k=args.k)
        print_hits(f"more like {args.like}:", hits)


if __name__ == "__main__":
    main()
