"""LangChain ``Embeddings`` over a clip-ingest :class:`Embedder` (text and images, one space).

``ClipIngestEmbeddings`` embeds texts with ``embed_documents`` / ``embed_query`` (the async
variants are LangChain's defaults, run in an executor) and images with the batched
``embed_image(uris)`` that LangChain's multimodal vector stores call. ``ClipIngestImageEmbeddings``
treats the *documents* as image paths/URIs and the *query* as text, so any LangChain vector
store (``InMemoryVectorStore``, ``langchain_qdrant.QdrantVectorStore``, ``langchain_milvus.Milvus``...)
indexes pictures with its ordinary ``add_texts`` / ``add_documents`` / ``from_texts`` and answers
text queries over them (tested with each of the three)::

    store = InMemoryVectorStore(ClipIngestImageEmbeddings("starter"))
    store.add_texts(["photos/cat.png", "photos/car.png"], metadatas=[{"kind": "cat"}, {"kind": "car"}])
    store.similarity_search("a red car", k=1)
    store.similarity_search_by_vector(store.embeddings.embed_image(["query.png"])[0], k=1)

Requires ``langchain-core`` (``pip install "clip-ingest[adapters]"``).
"""

from __future__ import annotations

from pathlib import Path
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


SIZE_PROBES = frozenset({"dummy_text"})
"""Texts that LangChain vector stores embed as a *document* only to learn the vector size
(``langchain-qdrant``'s ``QdrantVectorStore`` and ``from_texts`` embed ``"dummy_text"``)."""


class ClipIngestImageEmbeddings(ClipIngestEmbeddings):
    """Documents are images (their ``page_content`` is a path or ``file://`` URI), queries are text.

    Use it as a vector store's ``embedding`` to index pictures through the store's plain text API
    (``InMemoryVectorStore``, ``langchain_qdrant.QdrantVectorStore``, ``langchain_milvus.Milvus``,
    constructors and ``from_texts`` alike). A lone document that is one of :data:`SIZE_PROBES`
    (a store learning the vector size) is embedded as text instead of failing as a missing file.
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed the images that ``texts`` name."""
        if len(texts) == 1 and texts[0] in SIZE_PROBES and not Path(texts[0]).exists():
            return super().embed_documents(texts)
        return self.embed_image(texts)


__all__ = ["SIZE_PROBES", "ClipIngestEmbeddings", "ClipIngestImageEmbeddings"]
