"""Retrieval through LangChain with the clip-ingest embedder: pictures in a LangChain vector store.

    python examples/langchain_retrieval.py --query "an apple"
    python examples/langchain_retrieval.py --image examples/photos/food/apple_with_worm_dan_gerh_01.png

``ClipIngestImageEmbeddings`` makes a store's ordinary ``add_texts`` index images (each text is
an image path) while queries stay text, so ``similarity_search("an apple")`` is text-to-image
search; ``embed_image`` gives the vector of a query image for ``similarity_search_by_vector``.
The store here is LangChain's ``InMemoryVectorStore``; ``QdrantVectorStore`` (langchain-qdrant)
or ``Milvus`` (langchain-milvus) take the same embeddings object. Needs ``clip-ingest[adapters]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from example_common import print_ranked, query_parser, query_title


def main(argv: list[str] | None = None) -> None:
    args = query_parser(__doc__).parse_args(argv)

    try:
        from langchain_core.vectorstores import InMemoryVectorStore

        from clip_ingest.connectors.adapters.langchain import ClipIngestImageEmbeddings
    except ImportError as exc:
        sys.exit(str(exc))

    embeddings = ClipIngestImageEmbeddings(args.model, device=args.device)
    paths = sorted(str(p) for p in Path(args.photos).rglob("*.png"))
    store = InMemoryVectorStore(embeddings)
    store.add_texts(paths, metadatas=[{"label": Path(p).parent.name} for p in paths])
    print(f"indexed {len(paths)} images from {args.photos}")

    if args.image:
        vector = embeddings.embed_image([args.image])[0]
        found = store.similarity_search_with_score_by_vector(vector, k=args.k)
    else:
        found = store.similarity_search_with_score(args.query, k=args.k)
    print_ranked(query_title(args), ((score, doc.page_content) for doc, score in found))


if __name__ == "__main__":
    main()
