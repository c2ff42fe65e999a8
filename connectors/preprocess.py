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

from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor

from .pixels import Normalise

Transform = Callable[[Any], torch.Tensor]


class FusedToNormalisedTensor:
    """RGB PIL image → normalised ``(3, H, W)`` float32 tensor: :class:`~.pixels.Normalise`'s
    one arithmetic pass, as a tensor sharing its memory."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.normalise = Normalise(mean, std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.normalise(image))

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
