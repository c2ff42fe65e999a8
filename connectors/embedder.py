"""The embedder interface every other part of clip-ingest programs against.

An embedder turns images and texts into vectors of the same space: rows are
L2-normalised float32, so a dot product is a cosine similarity and one vector per
image answers both image and text queries. Ingestion, search and the framework
adapters depend only on this protocol, so any model (open_clip in torch, ONNX, a
remote service) can be dropped in.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from .decode import ImageInput

_T = TypeVar("_T")


@runtime_checkable
class Embedder(Protocol):
    """Images and texts to L2-normalised float32 vectors of one shared space."""

    @property
    def dim(self) -> int:
        """Length of every vector."""

    @property
    def model_id(self) -> str:
        """Stable identity: architecture + hash of the weights + preprocessing.

        Two embedders with the same ``model_id`` produce interchangeable vectors;
        a collection records it and refuses vectors from another model.
        """

    def embed_images(self, items: Iterable[ImageInput]) -> np.ndarray:
        """Embed images (paths, bytes, file objects or PIL images) -> ``(n, dim)`` float32.

        Raises :class:`~clip_ingest.connectors.decode.ImageDecodeError` for an item
        that is not a decodable image.
        """

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts -> ``(n, dim)`` float32."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def batched(items: Iterable, size: int) -> Iterable[list]:
    """Consecutive lists of at most ``size`` items."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_in_batches(
    items: Iterable[_T], batch_size: int, embed_batch: Callable[[list[_T]], np.ndarray], dim: Callable[[], int]
) -> np.ndarray:
    """``embed_batch`` over consecutive lists of at most ``batch_size`` items, rows concatenated.

    No items give a ``(0, dim())`` float32 array; ``dim`` is only called then, so an embedder
    may embed while it is still finding out its dimension.
    """
    out = [embed_batch(chunk) for chunk in batched(items, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, dim()), np.float32)


def check_texts(texts: Sequence[str]) -> None:
    """Raise ``TypeError`` for a lone string given where a sequence of texts belongs."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a sequence of strings; wrap a single text in a list")
