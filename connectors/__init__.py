"""Production side of clip-ingest: embedder, image decoding, ingestion, search, CLIs."""

from .decode import DecodedImage, ImageDecodeError, ImageInput, decode_image
from .embedder import Embedder
from .factory import DEFAULT_MODEL_SPEC, ModelLoadError, parse_model_spec

__all__ = [
    "DEFAULT_MODEL_SPEC",
    "DecodedImage",
    "Embedder",
    "ImageDecodeError",
    "ImageInput",
    "ModelLoadError",
    "OpenClipEmbedder",
    "decode_image",
    "parse_model_spec",
]


def __getattr__(name: str):
    # imported lazily: torch-free users (filters, decoding) should not pay for loading torch
    if name == "OpenClipEmbedder":
        from .openclip_embedder import OpenClipEmbedder

        return OpenClipEmbedder
    raise AttributeError(name)
