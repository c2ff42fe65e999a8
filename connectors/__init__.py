"""Production side of clip-ingest: embedder, image decoding, ingestion, search, CLIs."""

from .cpus import passive_openmp

# before torch is loaded by any module of the package: its OpenMP threads then sleep rather than
# spin while they wait (a user's OMP_WAIT_POLICY / GOMP_SPINCOUNT wins; see .cpus)
passive_openmp()

from .decode import DecodedImage, ImageDecodeError, ImageInput, decode_image
from .embedder import Embedder
from .model_spec import DEFAULT_MODEL_SPEC, ModelLoadError, parse_model_spec
from .runtime import load_embedder

__all__ = [
    "DEFAULT_MODEL_SPEC",
    "DecodedImage",
    "Embedder",
    "ImageDecodeError",
    "ImageInput",
    "ModelLoadError",
    "OpenClipEmbedder",
    "decode_image",
    "load_embedder",
    "parse_model_spec",
]


def __getattr__(name: str):
    # the torch embedder is imported when asked for: decoding, filters, stores and the ONNX runtime
    # need neither torch nor open_clip (a torch-free install has neither)
    if name == "OpenClipEmbedder":
        from .openclip_embedder import OpenClipEmbedder

        return OpenClipEmbedder
    raise AttributeError(name)
