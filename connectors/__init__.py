"""Production side of clip-ingest: embedder, image decoding, ingestion, search, CLIs."""

from .cpus import passive_openmp

# before torch is loaded by any module of the package: its OpenMP threads then sleep rather than
# spin while they wait (a user's OMP_WAIT_POLICY / GOMP_SPINCOUNT wins; see .cpus)
passive_openmp()

from .decode import DecodedImage, ImageDecodeError, ImageInput, decode_image
from .embedder import Embedder

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


_LAZY = {
    "OpenClipEmbedder": "openclip_embedder",
    "DEFAULT_MODEL_SPEC": "factory",
    "ModelLoadError": "factory",
    "parse_model_spec": "factory",
}


def __getattr__(name: str):
    # imported lazily: users of decoding, filters or stores should not pay for loading torch/open_clip
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
