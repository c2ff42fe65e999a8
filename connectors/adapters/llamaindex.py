"""LlamaIndex ``MultiModalEmbedding`` over a clip-ingest :class:`Embedder` (text and images, batched).

Give it as both ``embed_model`` and ``image_embed_model`` of a ``MultiModalVectorStoreIndex``
(or as ``embed_model`` of a ``VectorStoreIndex`` of text) so that text and image queries land
in the space ``clip-ingest`` stores::

    clip = ClipIngestEmbedding("starter")
    index = MultiModalVectorStoreIndex([ImageNode(image_path="cat.png")], embed_model=clip, image_embed_model=clip)
    index.as_retriever(image_similarity_top_k=3).text_to_image_retrieve("a cat")

Batches: LlamaIndex cuts inputs into ``embed_batch_size`` chunks and each chunk is one call of
the embedder (which batches again by its own ``batch_size``). Async methods run the
embedder in a worker thread. Requires ``llama-index-core`` (``pip install "clip-ingest[adapters]"``).
"""

from __future__ import annotations

import asyncio
from io import BytesIO
from typing import Any, List

from ..embedder import Embedder
from . import as_lists, image_source, require, resolve_embedder

_mm = require("llama_index.core.embeddings", "LlamaIndex")
_bridge = require("llama_index.core.bridge.pydantic", "LlamaIndex")

ImageType = Any  # llama_index.core.schema.ImageType: a path (str) or BytesIO


def _image_input(img: ImageType) -> Any:
    """LlamaIndex hands images as paths or BytesIO; the embedder takes paths or bytes."""
    return img.getvalue() if isinstance(img, BytesIO) else image_source(img)


class ClipIngestEmbedding(_mm.MultiModalEmbedding):
    """Text and image embeddings from one clip-ingest :class:`Embedder`.

    Args:
        embedder: an :class:`Embedder`, or a model spec (default: the starter model) for which an
            ``OpenClipEmbedder`` is built with ``options`` (device, batch_size, precision...).
        embed_batch_size: items per embedder call (LlamaIndex's batching).
    """

    _embedder: Any = _bridge.PrivateAttr()

    def __init__(
        self, embedder: Embedder | str | None = None, *, embed_batch_size: int = 32, **options: Any
    ) -> None:
        resolved = resolve_embedder(embedder, **options)
        super().__init__(model_name=resolved.model_id, embed_batch_size=embed_batch_size)
        self._embedder = resolved

    @classmethod
    def class_name(cls) -> str:
        return "ClipIngestEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The wrapped embedder."""
        return self._embedder

    # -- text
    def _get_query_embedding(self, query: str) -> List[float]:
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return as_lists(self._embedder.embed_texts(list(texts)))

    async def _aget_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    # -- images
    def _get_image_embedding(self, img_file_path: ImageType) -> List[float]:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> List[float]:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    def _get_image_embeddings(self, img_file_paths: List[ImageType]) -> List[List[float]]:
        return as_lists(self._embedder.embed_images([_image_input(img) for img in img_file_paths]))

    async def _aget_image_embeddings(self, img_file_paths: List[ImageType]) -> List[List[float]]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)


__all__ = ["ClipIngestEmbedding"]
