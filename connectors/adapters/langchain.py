"""LangChain ``Embeddings`` over a clip-ingest :class:`Embedder` (text and images, one space).

``ClipIngestEmbeddings`` embeds texts with ``embed_documents`` / ``embed_query`` (the async
variants are LangChain's defaults, run in an executor) and images with the batched
``embed_image(uris)`` that LangChain's multimodal vector stores call. ``ClipIngestImageEmbeddings``
treats the *documents* as image paths/URIs and the *query* as text, so any LangChain vector
store (``InMemoryVectorStore``, ``QdrantVectorStore``, ``Milvus``...) indexes pictures with its
ordinary ``add_texts`` / ``add_documents`` and answers text queries over them::

    store = InMemoryVectorStore(ClipIngestImageEmbeddings("starter"))
    store.add_texts(["photos/cat.png", "photos/car.png"], metadatas=[{"kind": "cat"}, {"kind": "car"}])
    store.similarity_search("a red car", k=1)
    store.similarity_search_by_vector(store.embeddings.embed_image(["query.png"])[0], k=1)

Requires ``langchain-core`` (``pip install "clip-ingest[adapters]"``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..decode import ImageInput
from ..embedder import Embedder
from . import as_lists, image_sources, require, resolve_embedder

_core = require("langchain_core.embeddings", "LangChain")


class ClipIngestEmbeddings(_core.Embeddings):
    """LangChain embeddings whose documents and queries are texts; images via :meth:`embed_image`.

    Args:
        embedder: an :class:`Embedder`, or a model spec (default: the starter model) for which an
            ``OpenClipEmbedder`` is built with ``options`` (device, batch_size, precision...).
    """

    def __init__(self, embedder: Embedder | str | None = None, **options: Any) -> None:
        self.embedder = resolve_embedder(embedder, **options)

    @property
    def dim(self) -> int:
        """Length of every vector (the collection's vector size)."""
        return self.embedder.dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts as documents (one batch through the embedder)."""
        return as_lists(self.embedder.embed_texts(list(texts)))

    def embed_query(self, text: str) -> list[float]:
        """Embed a text query."""
        return as_lists(self.embedder.embed_texts([text]))[0]

    def embed_image(self, uris: Sequence[ImageInput]) -> list[list[float]]:
        """Embed images (paths, ``file://`` URIs, bytes or PIL images), batched by the embedder.

        Raises :class:`~clip_ingest.connectors.decode.ImageDecodeError` naming the first item
        that is not a decodable image; nothing is returned for the others.
        """
        return as_lists(self.embedder.embed_images(image_sources(uris)))


class ClipIngestImageEmbeddings(ClipIngestEmbeddings):
    """Documents are images (their ``page_content`` is a path or ``file://`` URI), queries are text.

    Use it as a vector store's ``embedding`` to index pictures through the store's plain text API.
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed the images that ``texts`` name."""
        return self.embed_image(texts)


__all__ = ["ClipIngestEmbeddings", "ClipIngestImageEmbeddings"]
