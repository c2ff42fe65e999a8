"""open_clip's inference preprocessing with its pixel conversion done in one pass.

open_clip's eval transform ends in ``MaybeConvertMode`` → ``ToTensor`` → ``Normalize``:
``ToTensor`` makes a float copy, divides by 255 and permutes, ``Normalize`` makes another pass
for the mean and one for the standard deviation. On a CPU that tail costs more than the resize
(measured in ``benchmarks/decode.py``). :func:`fast_transform` keeps open_clip's geometric
transforms exactly as they are (resize, crop or pad, in whatever mode the model's preprocessing
config asks for) and replaces the tail by one fused uint8 → normalised float conversion:
``(x - 255·mean) / (255·std)``, the same numbers as ``(x / 255 - mean) / std`` up to float
rounding (≤ 1e-6; tested). A transform it does not recognise is returned unchanged, so a model
with unusual preprocessing stays correct, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor

from .decode import DEFAULT_MAX_MEGAPIXELS, DecodedImage, ImageInput, decode_image

Transform = Callable[[Any], torch.Tensor]


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
        return pixels.numpy() if self.as_numpy else pixels


class FusedToNormalisedTensor:
    """RGB PIL image → normalised ``(3, H, W)`` float32 tensor in one arithmetic pass.

    The channel-first transpose is made on the uint8 pixels (a quarter of the bytes), and the
    subtraction writes float32 straight from them: about 3x faster than converting to float,
    normalising and transposing the floats, with bit-identical results (tested)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = (np.asarray(mean, dtype=np.float32) * 255.0).reshape(3, 1, 1)
        self.scale = (1.0 / (np.asarray(std, dtype=np.float32) * 255.0)).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        channels = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (3, H, W) uint8
        pixels = np.subtract(channels, self.mean, dtype=np.float32)
        pixels *= self.scale
        return torch.from_numpy(pixels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _is_convert_mode(step: object) -> bool:
    return type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", "RGB") == "RGB"


def fast_transform(transform: Transform) -> Transform:
    """open_clip's eval ``transform`` with its tensor conversion fused; unchanged if unrecognised.

    Recognised: a ``Compose`` whose last three steps are ``MaybeConvertMode("RGB")``,
    ``(Maybe)ToTensor`` and ``Normalize`` (every inference transform open_clip builds).
    """
    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, Compose) or not isinstance(steps, list) or len(steps) < 3:
        return transform
    convert, to_tensor, normalize = steps[-3:]
    if not (_is_convert_mode(convert) and isinstance(to_tensor, ToTensor) and isinstance(normalize, Normalize)):
        return transform
    if getattr(normalize, "inplace", False) or len(normalize.mean) != 3 or len(normalize.std) != 3:
        return transform
    return Compose([*steps[:-3], FusedToNormalisedTensor(normalize.mean, normalize.std)])
