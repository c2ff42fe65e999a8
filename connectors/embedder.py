"""The embedder interface every other part of clip-ingest programs against.

An embedder turns images and texts into vectors of the same space: rows are
L2-normalised float32, so a dot product is a cosine similarity and one vector per
image answers both image and text queries. Ingestion, search and the framework
adapters depend only on this protocol, so any model (open_clip in torch, ONNX, a
remote service) can be dropped in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from .decode import DecodedImage, ImageInput

if TYPE_CHECKING:
    from PIL import Image

    from .pixels import Preparer

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


class TowerEmbedder:
    """What both model runtimes share: images go through their :class:`~.pixels.Preparer` (decode,
    transform) and the image tower in batches, texts through the text tower in batches.

    A subclass sets ``preparer``, ``batch_size``, ``_dim``, ``_model_id``, ``_name`` and
    ``metadata`` (its model folder's ``clip_ingest.json``: the text calibration, ...), and gives
    :meth:`stack` (its runtime's batch type), :meth:`embed_pixels` and :meth:`embed_tokens`.
    The split decode / embed ingestion pipeline drives :meth:`decode`, :meth:`preprocess` and
    :meth:`embed_pixels` itself, with the decoding in its workers."""

    preparer: Preparer
    batch_size: int
    _dim: int
    _model_id: str
    _name: str
    metadata: dict[str, Any]
    """What the model folder records (``clip_ingest.json``); empty for a model without one."""

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def name(self) -> str:
        return self._name

    def decode(self, item: ImageInput) -> DecodedImage:
        """Decode one item the way this embedder wants it (JPEG draft at its input size)."""
        return self.preparer.decode(item)

    def preprocess(self, image: Image.Image) -> Any:
        """An RGB image -> the model's input ``(3, S, S)`` (open_clip's eval transform)."""
        return self.preparer.preprocess(image)

    def stack(self, inputs: list[Any]) -> Any:
        """Preprocessed images -> one ``(n, 3, S, S)`` batch of this runtime's type."""
        raise NotImplementedError

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Embed preprocessed images ``(n, 3, S, S)`` in one forward pass."""
        raise NotImplementedError

    def embed_tokens(self, texts: list[str]) -> np.ndarray:
        """Embed one batch of texts in one forward pass."""
        raise NotImplementedError

    def embed_images(self, items: Iterable[ImageInput]) -> np.ndarray:
        return embed_in_batches(
            items, self.batch_size,
            lambda chunk: self.embed_pixels(self.stack([self.preprocess(self.decode(item).image) for item in chunk])),
            lambda: self.dim,
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        return embed_in_batches(texts, self.batch_size, lambda chunk: self.embed_tokens(list(chunk)), lambda: self._dim)
