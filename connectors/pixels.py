"""Model input pixels with Pillow and numpy only: the input path of every embedder, torch-free.

:class:`Preparer` is an embedder's input path without its model (decode, then the eval
transform); :class:`Normalise` is the fused uint8 → normalised float32 conversion both runtimes
end with; :class:`PillowTransform` is open_clip's eval preprocessing for the configurations
nearly every CLIP uses (``resize_mode`` ``shortest`` to a square, or ``squash``), written with
Pillow's resize — the very call torchvision makes for a PIL image — so an ONNX model needs no
torch import. It gives open_clip's pixels exactly (tested); any other configuration
(``longest`` with padding, a non-square ``shortest``) is left to open_clip's transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from .decode import DEFAULT_MAX_MEGAPIXELS, DecodedImage, ImageInput, decode_image

Transform = Callable[[Image.Image], Any]

#: open_clip's interpolation names → Pillow's filters (what torchvision passes to ``Image.resize``)
PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
               "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preparer:
    """An embedder's input path without its model: decode (JPEG draft at the input size, the
    size limit) and the eval transform. It pickles, so decode workers in other processes (the
    Ray executor's) build exactly the inputs the embedder would build itself."""

    transform: Transform
    image_size: int
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
    as_numpy: bool = False
    """ONNX Runtime takes numpy arrays, torch tensors."""

    def decode(self, item: ImageInput) -> DecodedImage:
        return decode_image(item, max_megapixels=self.max_megapixels, draft_size=self.image_size)

    def preprocess(self, image: Image.Image) -> Any:
        pixels = self.transform(image)
        return pixels.numpy() if self.as_numpy and not isinstance(pixels, np.ndarray) else pixels


class Normalise:
    """RGB PIL image → normalised ``(3, H, W)`` float32 array in one arithmetic pass.

    The channel-first transpose is made on the uint8 pixels (a quarter of the bytes), and the
    subtraction writes float32 straight from them: ``(x - 255·mean) / (255·std)``, the numbers of
    ``(x / 255 - mean) / std`` up to float rounding (≤ 1e-6; tested)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = (np.asarray(mean, dtype=np.float32) * 255.0).reshape(3, 1, 1)
        self.scale = (1.0 / (np.asarray(std, dtype=np.float32) * 255.0)).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        channels = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (3, H, W) uint8
        pixels = np.subtract(channels, self.mean, dtype=np.float32)
        pixels *= self.scale
        return pixels

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _square(size: Any) -> int | None:
    if isinstance(size, (list, tuple)):
        return int(size[0]) if len(size) == 2 and size[0] == size[1] else None
    return int(size)


class PillowTransform:
    """open_clip's eval transform for ``shortest`` (square) and ``squash`` resizing, without torch.

    ``shortest``: the short side scaled to ``size`` (the long one to ``int(size · long / short)``,
    torchvision's rule), then the centre ``size × size`` crop (offsets rounded as torchvision
    does); ``squash``: scaled to ``size × size``. Then :class:`Normalise`."""

    def __init__(self, size: int, resize_mode: str, interpolation: str, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.resize_mode = resize_mode
        self.filter = PIL_FILTERS[interpolation]
        self.normalise = Normalise(mean, std)

    @classmethod
    def for_preprocess_cfg(cls, cfg: Mapping[str, Any]) -> PillowTransform | None:
        """The transform for open_clip's ``preprocess_cfg``, or ``None`` where it is not one of ours."""
        size = _square(cfg.get("size", 224))
        mode = cfg.get("resize_mode", "shortest")
        interpolation = cfg.get("interpolation", "bicubic")
        if size is None or mode not in ("shortest", "squash") or interpolation not in PIL_FILTERS or cfg.get("mode", "RGB") != "RGB":
            return None
        return cls(size, mode, interpolation, cfg["mean"], cfg["std"])

    def __call__(self, image: Image.Image) -> np.ndarray:
        size = self.size
        if self.resize_mode == "squash":
            return self.normalise(image.resize((size, size), self.filter))
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        new_size = (size, new_long) if width <= height else (new_long, size)
        if new_size != (width, height):
            image = image.resize(new_size, self.filter)
        left = int(round((new_size[0] - size) / 2.0))
        top = int(round((new_size[1] - size) / 2.0))
        if (left, top) != (0, 0) or new_size != (size, size):
            image = image.crop((left, top, left + size, top + size))
        return self.normalise(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, resize_mode={self.resize_mode!r})"
