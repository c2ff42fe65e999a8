"""Retrieval through LlamaIndex with the clip-ingest embedder: a multimodal index of pictures.

    python examples/llamaindex_retrieval.py --query "an apple"
    python examples/llamaindex_retrieval.py --image examples/photos/food/apple_with_worm_dan_gerh_01.png

``ClipIngestEmbedding`` is a LlamaIndex ``MultiModalEmbedding``: given as ``image_embed_model`` of a
``MultiModalVectorStoreIndex`` (default in-memory stores) it embeds the ``ImageNode`` pictures in
batches, text queries (``text_to_image_retrieve``) and image queries (``image_to_image_retrieve``)
in the same space. Needs ``clip-ingest[adapters]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from example_common import print_ranked, query_parser, query_title


def main(argv: list[str] | None = None) -> None:
    args = query_parser(__doc__).parse_args(argv)

    try:
        from llama_index.core.indices import MultiModalVectorStoreIndex
        from llama_index.core.schema import ImageNode

        from clip_ingest.connectors.adapters.llamaindex import ClipIngestEmbedding
    except ImportError as exc:
        sys.exit(str(exc))

    clip = ClipIngestEmbedding(args.model, device=args.device)
    paths = sorted(Path(args.photos).rglob("*.png"))
    # LlamaIndex skips nodes without text, so each picture carries its file name
    nodes = [ImageNode(image_path=str(p), text=p.name, metadata={"label": p.parent.name}) for p in paths]
    index = MultiModalVectorStoreIndex(nodes, embed_model=clip, image_embed_model=clip)
    print(f"indexed {len(nodes)} images from {args.photos}")

    retriever = index.as_retriever(image_similarity_top_k=args.k)
    if args.image:
        found = retriever.image_to_image_retrieve(args.image)
    else:
        found = retriever.text_to_image_retrieve(args.query)
    print_ranked(query_title(args), ((hit.score, hit.node.image_path) for hit in found))


if __name__ == "__main__":
    main()
