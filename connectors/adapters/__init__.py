"""Framework adapters: LangChain, LlamaIndex and Haystack 2 views of one :class:`Embedder`.

Each adapter module imports its framework lazily (``pip install "clip-ingest[adapters]"``)
and only converts types; the vectors are exactly the embedder's, so anything embedded
through a framework can be mixed with what ``clip-ingest`` stored for the same model.
This package module holds what the three adapters share.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

import numpy as np

from ..decode import ImageInput
from ..embedder import Embedder

INSTALL_HINT = 'pip install "clip-ingest[adapters]"'


def require(module: str, framework: str) -> ModuleType:
    """Import ``module`` or fail with an ImportError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {framework} adapter needs the {framework} package ({module} is not importable: {exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc


def resolve_embedder(embedder: Embedder | str | None, **options: Any) -> Embedder:
    """An :class:`Embedder` as given, or one loaded by :func:`~clip_ingest.connectors.runtime.load_embedder`
    for a model spec (None: the starter model).

    ``options`` (``runtime="onnx"``, ``quantize="int8"``, device, batch_size, ...) are passed to
    ``load_embedder`` and are an error with a ready embedder, whose settings are already fixed.
    """
    if embedder is not None and not isinstance(embedder, str):
        if not isinstance(embedder, Embedder):
            raise TypeError(f"expected an Embedder or a model spec string, not {type(embedder).__name__}")
        if options:
            raise TypeError(f"{', '.join(sorted(options))} only apply when a model spec is given, not an Embedder")
        return embedder
    from ..model_spec import DEFAULT_MODEL_SPEC
    from ..runtime import load_embedder

    return load_embedder(embedder or DEFAULT_MODEL_SPEC, **options)


def image_source(uri: ImageInput) -> ImageInput:
    """A local path for a ``file://`` URI; paths, bytes, file objects and PIL images unchanged.

    Other URI schemes are refused: the adapters never fetch from the network.
    """
    if isinstance(uri, str) and "://" in uri:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise ValueError(f"only local image paths and file:// URIs are supported, not {uri!r}")
        return unquote(parts.path)
    if isinstance(uri, os.PathLike):
        return Path(uri)
    return uri


def image_sources(uris: Iterable[ImageInput]) -> list[ImageInput]:
    """:func:`image_source` of each item."""
    return [image_source(uri) for uri in uris]


def as_lists(vectors: np.ndarray) -> list[list[float]]:
    """Rows of a float32 array as plain Python float lists (what the frameworks store)."""
    return np.asarray(vectors, dtype=np.float32).tolist()


__all__ = ["INSTALL_HINT", "as_lists", "image_source", "image_sources", "require", "resolve_embedder"]
