"""The query model as the server runs it: texts and images through micro-batchers (shared
forward passes between concurrent queries), images decoded first in the caller's thread with
the embedder's own decode, as at ingestion, so a query image gets the vector ingestion gave it."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..decode import ImageInput, decode_image
from ..embedder import Embedder
from .batching import MicroBatcher


def decode_for(embedder: Embedder, item: ImageInput) -> Image.Image:
    """``item`` decoded the way ``embedder`` decodes at ingestion (JPEG draft at its input size),
    upright RGB; :class:`~..decode.ImageDecodeError` when it is no image."""
    decode = getattr(embedder, "decode", None)
    decoded = decode(item) if decode is not None else decode_image(item)
    assert decoded.image is not None  # only a decode worker process leaves the pixels out
    return decoded.image


class BatchedEmbedder:
    """An :class:`Embedder` whose texts and (decoded) images go through micro-batchers."""

    def __init__(self, embedder: Embedder, batcher: MicroBatcher, image_batcher: MicroBatcher) -> None:
        self._embedder = embedder
        self._batcher = batcher
        self._image_batcher = image_batcher
        self.dim: int = embedder.dim
        self.model_id: str = embedder.model_id

    def embed_images(self, items: Iterable[ImageInput]) -> np.ndarray:
        return self._image_batcher.embed([decode_for(self._embedder, item) for item in items])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._batcher.embed(texts)

    def __getattr__(self, name: str) -> Any:  # what else the model carries (e.g. its metadata, text calibration)
        return getattr(self._embedder, name)


__all__ = ["BatchedEmbedder", "decode_for"]
