"""Text, image and "more like this" search over one collection.

The :class:`Searcher` only joins an :class:`~clip_ingest.connectors.embedder.Embedder` (query
vectors) to a :class:`~clip_ingest.connectors.backends.base.VectorStore` (nearest neighbours with
a payload filter); it does no ranking of its own, so hits come back in the database's order.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from ..backends.base import Hit, ModelMismatchError, StoreError, VectorStore
from ..decode import ImageInput
from ..embedder import Embedder
from .filters import And, Compare, Filter, FilterInput, Not, parse_filter

#: payload field holding the sha256 of an image's bytes (written by ingestion)
SHA256_FIELD = "sha256"

#: a stored point (its id) or an image given as a file path / bytes / PIL image
SimilarTo = Union[str, os.PathLike, bytes, Image.Image]


class PointNotFoundError(LookupError):
    """``search_similar`` was given a point id that is not in the collection (and no such file)."""


class Searcher:
    """Search ``store`` with query vectors from ``embedder``.

    Every method takes ``k`` (hits per query), ``filter`` (text, dict or parsed
    :data:`~.filters.Filter`; see docs/filters.md), ``offset`` (hits to skip, for paging) and
    ``score_threshold`` (minimum cosine similarity) and returns :class:`Hit` objects best first.
    Filters are parsed before any embedding is computed, so a bad filter fails fast with
    :class:`~.filters.FilterSyntaxError`.
    """

    def __init__(self, store: VectorStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    def verify_model(self) -> None:
        """Fail unless the collection exists and was built with this embedder's model.

        Raises :class:`StoreError` for a missing collection and :class:`ModelMismatchError`
        when its vectors come from another model (their scores would be meaningless).
        """
        stored = self.store.collection_model()
        if stored is None:
            raise StoreError(
                f"the collection does not exist in {self.store!r} (ingest images first, or check "
                "--collection, --target and --data-dir / the store location)"
            )
        model_id, dim = stored
        if (model_id, dim) != (self.embedder.model_id, self.embedder.dim):
            raise ModelMismatchError(
                f"the collection was built with model {model_id!r} (dim {dim}) but the query model is "
                f"{self.embedder.model_id!r} (dim {self.embedder.dim}); pass the same --model (and --quantize) as at ingestion"
            )

    # -- single queries
    def search_text(
        self, text: str, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images best matching ``text``."""
        return self.search_texts([text], k=k, filter=filter, offset=offset, score_threshold=score_threshold)[0]

    def search_image(
        self, image: ImageInput, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to ``image`` (path, bytes, file object or PIL image)."""
        return self.search_images([image], k=k, filter=filter, offset=offset, score_threshold=score_threshold)[0]

    def search_similar(
        self, item: SimilarTo, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to a stored point or an image file, excluding that image itself.

        ``item`` is a point id, or an image (an existing file path, bytes or PIL image). For
        an image the stored copies are found by the sha256 of its bytes (payload field
        ``sha256``) and excluded by filter, so paging stays exact; an image never ingested is
        simply embedded. A point id uses the stored vector.
        """
        parsed = _parse_optional(filter)
        if isinstance(item, str) and not os.path.exists(item):
            if not _is_uuid(item):
                raise PointNotFoundError(
                    f"{item!r} is neither an existing image file nor a point id (point ids are UUIDs, "
                    "as printed by clip-search): check the path"
                )
            return self.search_like_point(item, k, parsed, offset, score_threshold)
        content = _image_bytes(item)
        vector = self.embedder.embed_images([content if content is not None else item])[0]
        if content is None:  # a PIL image: no file bytes to recognise it by
            return self._search(vector, k, parsed, offset, score_threshold)
        return self._search(vector, k, _excluding_sha256(parsed, hashlib.sha256(content).hexdigest()), offset, score_threshold)

    def search_like_point(
        self, point_id: str, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to the stored point ``point_id``, excluding it; never reads a file
        (for ids that come from a request). Raises :class:`PointNotFoundError` for an unknown id."""
        parsed = _parse_optional(filter)
        if not _is_uuid(point_id):
            raise PointNotFoundError(f"{point_id!r} is not a point id (point ids are UUIDs)")
        return self._similar_to_point(point_id, k, parsed, offset, score_threshold)

    # -- batches
    def search_texts(
        self, texts: Sequence[str], k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        """One hit list per text (texts are embedded in one batch)."""
        parsed = _parse_optional(filter)
        vectors = self.embedder.embed_texts(list(texts))
        return [self._search(v, k, parsed, offset, score_threshold) for v in vectors]

    def search_images(
        self, images: Sequence[ImageInput], k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        """One hit list per image (images are embedded in one batch)."""
        parsed = _parse_optional(filter)
        vectors = self.embedder.embed_images(list(images))
        return [self._search(v, k, parsed, offset, score_threshold) for v in vectors]

    # -- internals
    def _search(self, vector: np.ndarray, k: int, filter: Filter | None, offset: int, score_threshold: float | None) -> list[Hit]:
        if k < 1:
            raise ValueError("k must be >= 1")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        return self.store.search(vector, k=k, filter=filter, offset=offset, score_threshold=score_threshold)

    def _similar_to_point(
        self, point_id: str, k: int, filter: Filter | None, offset: int, score_threshold: float | None
    ) -> list[Hit]:
        found = self.store.retrieve([point_id], with_vectors=True)
        if not found or found[0].vector is None:
            raise PointNotFoundError(f"no point with id {point_id!r} in the collection, and no file of that name")
        point = found[0]
        sha = point.payload.get(SHA256_FIELD)
        if isinstance(sha, str):
            return self._search(point.vector, k, _excluding_sha256(filter, sha), offset, score_threshold)
        # no content hash to filter on: fetch one extra hit from the start and drop the point itself
        hits = self._search(point.vector, offset + k + 1, filter, 0, score_threshold)
        return [hit for hit in hits if hit.id != point.id][offset : offset + k]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _parse_optional(filter: FilterInput | None) -> Filter | None:
    return None if filter is None else parse_filter(filter)


def _excluding_sha256(filter: Filter | None, sha: str) -> Filter:
    exclude = Not(Compare(SHA256_FIELD, "=", sha))
    return exclude if filter is None else And((filter, exclude))


def _image_bytes(item: SimilarTo) -> bytes | None:
    """The file bytes of a path or bytes item (None for a PIL image)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    return None


__all__ = ["PointNotFoundError", "SHA256_FIELD", "Searcher", "SimilarTo"]
