"""The open_clip embedder: any open_clip model (or one of our exports) behind :class:`Embedder`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from .decode import DEFAULT_MAX_MEGAPIXELS
from .embedder import TowerEmbedder, l2_normalise
from .factory import DEFAULT_MODEL_SPEC, LoadedModel, load_model
from .pixels import Preparer


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else cuda, then Apple mps, then cpu."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hash_weights(digest: "hashlib._Hash", module: torch.nn.Module) -> "hashlib._Hash":
    """Feed ``module``'s parameter names and fp32 values into ``digest`` (in name order); returns it."""
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest


def compute_model_id(name: str, model: torch.nn.Module, preprocess_cfg: dict) -> str:
    """``NAME@WEIGHTS16/PP8``: architecture, sha256 of the fp32 weights, hash of preprocessing."""
    weights = hash_weights(hashlib.sha256(), model)
    pp = hashlib.sha256(json.dumps(preprocess_cfg, sort_keys=True, default=str).encode())
    return f"{name}@{weights.hexdigest()[:16]}/{pp.hexdigest()[:8]}"


class OpenClipEmbedder(TowerEmbedder):
    """Embed images and texts with an open_clip model.

    Args:
        model: a model spec (see :mod:`clip_ingest.connectors.factory`), default the
            bundled starter model.
        device: ``auto`` (cuda, mps, cpu) or an explicit torch device.
        batch_size: images/texts per forward pass; results do not depend on it.
        precision: ``auto`` (fp16 autocast on CUDA, fp32 elsewhere), ``fp32`` or ``fp16``.
            bf16 is never chosen automatically: on CPUs without bf16 units it is ~7x slower.
        max_megapixels: images above this size are refused (:class:`ImageDecodeError`).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL_SPEC,
        *,
        device: str | None = "auto",
        batch_size: int = 32,
        precision: str = "auto",
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.device = pick_device(device)
        loaded = load_model(model, device="cpu")
        self._init_from_loaded(loaded, batch_size, precision, max_megapixels)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        *,
        device: str | None = "auto",
        batch_size: int = 32,
        precision: str = "auto",
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    ) -> "OpenClipEmbedder":
        """Wrap an already built model (e.g. one being trained by ``clip_ingest.model``)."""
        self = cls.__new__(cls)
        self.device = pick_device(device)
        self._init_from_loaded(loaded, batch_size, precision, max_megapixels)
        return self

    def _init_from_loaded(
        self, loaded: LoadedModel, batch_size: int, precision: str, max_megapixels: float | None
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if precision not in ("auto", "fp32", "fp16"):
            raise ValueError(f"precision must be auto, fp32 or fp16, not {precision!r}")
        self.loaded = loaded
        self.batch_size = batch_size
        self.max_megapixels = max_megapixels
        self._model_id = compute_model_id(loaded.name, loaded.model, loaded.preprocess_cfg)
        self._name = loaded.name
        self.metadata = loaded.metadata
        self.model = loaded.model.to(self.device).eval()
        self.autocast = self.device.type == "cuda" and precision in ("auto", "fp16")
        size = loaded.preprocess_cfg.get("size") or self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.preparer = Preparer(loaded.preprocess, self.image_size, max_megapixels)
        with torch.inference_mode():
            self._dim = int(self.embed_texts(["a"]).shape[1])

    def _forward(self, fn, batch: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":  # page-locked memory makes the non-blocking copy really asynchronous
            batch = batch.pin_memory()
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.autocast):
            out = fn(batch.to(self.device, non_blocking=True))
        return l2_normalise(out.float().cpu().numpy())

    def stack(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return self._forward(self.model.encode_image, pixels)

    def embed_tokens(self, texts: list[str]) -> np.ndarray:
        return self._forward(self.model.encode_text, self.loaded.tokenizer(texts))
