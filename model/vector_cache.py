"""Image vectors of one evaluation run, shared by the models with the same image tower."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.openclip_embedder import hash_weights


def image_tower_key(embedder: Embedder) -> str | None:
    """A hash of what decides an open_clip embedder's image vectors: its image tower's weights,
    its preprocessing and its device and precision; ``None`` for other embedders (ONNX)."""
    model, loaded = getattr(embedder, "model", None), getattr(embedder, "loaded", None)
    visual = getattr(model, "visual", None)
    if visual is None or loaded is None:
        return None
    settings = [type(embedder).__name__, loaded.preprocess_cfg, str(getattr(embedder, "device", "")),
                bool(getattr(embedder, "autocast", False))]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    return hash_weights(digest, visual).hexdigest()


class SharedImageVectors:
    """Image vectors of one evaluation run, shared by the models with the same image tower.

    The realigned rows of the paper's experiment keep their parent's image tower by
    construction, so their image vectors are the parent's: embedding each benchmark image once
    per image tower (instead of once per model) saves about half the image forward passes of
    ``clip-model experiment``'s evaluation and gives those rows exactly the same vectors.
    """

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def wrap(self, embedder: Embedder) -> Embedder:
        key = image_tower_key(embedder)
        return embedder if key is None else _CachedImages(embedder, key, self._vectors)


class _CachedImages:
    """``embedder`` whose ``embed_images`` of file paths reuses the vectors in ``store``."""

    def __init__(self, embedder: Embedder, key: str, store: dict[tuple[str, str], np.ndarray]) -> None:
        self._embedder, self._key, self._store = embedder, key, store

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)

    def embed_images(self, items) -> np.ndarray:
        items = list(items)
        if not items or not all(isinstance(item, (str, Path)) for item in items):
            return self._embedder.embed_images(items)
        keys = [(self._key, str(item)) for item in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self._store))
        if todo:
            for k, vector in zip(todo, self._embedder.embed_images([path for _, path in todo])):
                self._store[k] = vector
        return np.stack([self._store[k] for k in keys])
