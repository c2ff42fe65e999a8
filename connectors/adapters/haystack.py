"""Haystack 2 components over a clip-ingest :class:`Embedder`: text queries, image documents, image queries.

- :class:`ClipIngestTextEmbedder` ``run(text) -> {"embedding"}``: a text query for an
  embedding retriever (``InMemoryEmbeddingRetriever``, Qdrant's, Milvus'...);
- :class:`ClipIngestDocumentImageEmbedder` ``run(documents) -> {"documents"}``: embeds the image
  each document points to (``meta["file_path"]`` like Haystack's own image embedders, else the
  document's ``blob`` bytes) for an indexing pipeline ending in a ``DocumentWriter``;
- :class:`ClipIngestImageEmbedder` ``run(image) -> {"embedding"}``: an image query ("more like this").

Given a model spec instead of an embedder, a component loads the model in ``warm_up()``
(which a Pipeline calls before running) or on first use. Requires ``haystack-ai``
(``pip install "clip-ingest[adapters]"``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ..decode import ImageInput
from ..embedder import Embedder
from . import as_lists, image_source, require, resolve_embedder

_haystack = require("haystack", "Haystack")
component = _haystack.component
Document = _haystack.Document


class _EmbedderComponent:
    """Holds a ready :class:`Embedder`, or a model spec resolved lazily by :meth:`warm_up`."""

    def __init__(self, embedder: Embedder | str | None = None, **options: Any) -> None:
        self._given = embedder
        self._options = options
        self._embedder: Embedder | None = None
        if embedder is not None and not isinstance(embedder, str):
            self._embedder = resolve_embedder(embedder, **options)

    def warm_up(self) -> None:
        """Load the model if only a spec was given (idempotent)."""
        if self._embedder is None:
            self._embedder = resolve_embedder(self._given, **self._options)

    @property
    def embedder(self) -> Embedder:
        """The embedder (loaded on first access)."""
        self.warm_up()
        assert self._embedder is not None
        return self._embedder


@component
class ClipIngestTextEmbedder(_EmbedderComponent):
    """Embed a text query into the image space (``{"embedding": list[float]}``)."""

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """Embed ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"ClipIngestTextEmbedder expects a string; embed Documents with a document embedder, not {type(text).__name__}")
        return {"embedding": as_lists(self.embedder.embed_texts([text]))[0]}


@component
class ClipIngestImageEmbedder(_EmbedderComponent):
    """Embed an image query (path, ``file://`` URI, bytes or PIL image): ``{"embedding": list[float]}``."""

    @component.output_types(embedding=list[float])
    def run(self, image: Any) -> dict[str, Any]:
        """Embed ``image``."""
        return {"embedding": as_lists(self.embedder.embed_images([image_source(image)]))[0]}


@component
class ClipIngestDocumentImageEmbedder(_EmbedderComponent):
    """Set ``embedding`` on documents that point to images; returns new Document objects.

    Args:
        embedder: an :class:`Embedder` or a model spec (default: the starter model).
        file_path_meta_field: the meta field holding the image path (Haystack's convention).
        root_path: prefix for relative paths in that field.
        options: ``OpenClipEmbedder`` options when a spec is given.
    """

    def __init__(
        self,
        embedder: Embedder | str | None = None,
        *,
        file_path_meta_field: str = "file_path",
        root_path: str | None = None,
        **options: Any,
    ) -> None:
        _EmbedderComponent.__init__(self, embedder, **options)  # zero-arg super() breaks under @component
        self.file_path_meta_field = file_path_meta_field
        self.root_path = root_path

    def _image_of(self, doc: Any) -> ImageInput:
        path = doc.meta.get(self.file_path_meta_field)
        if path is not None:
            source = image_source(path)
            return os.path.join(self.root_path, source) if self.root_path and isinstance(source, str) else source
        if doc.blob is not None:
            return doc.blob.data
        raise ValueError(
            f"document {doc.id} has neither meta[{self.file_path_meta_field!r}] nor a blob: no image to embed"
        )

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed every document's image in one batch (all or nothing: a bad image raises, naming it)."""
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError("ClipIngestDocumentImageEmbedder expects a list of Documents")
        images = [self._image_of(doc) for doc in documents]
        vectors = as_lists(self.embedder.embed_images(images)) if images else []
        return {"documents": [replace(doc, embedding=vector) for doc, vector in zip(documents, vectors)]}


__all__ = ["ClipIngestDocumentImageEmbedder", "ClipIngestImageEmbedder", "ClipIngestTextEmbedder"]
