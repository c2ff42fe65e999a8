"""Image augmentation for training.

By default training images are resized so their short side is ``resize_ratio * S``
(1.125 S), randomly cropped to ``S x S``, randomly flipped and colour-jittered, then
normalised with the model's mean/std. This follows the authors' reference code in spirit,
not to the letter: their fine-tuning transforms also differ per backbone; the jitter
strengths here are ours.

``crop_scale = (lo, hi)`` switches to a random *resized* crop (CLIP / SimCLR style: a crop of
``lo``-``hi`` of the image area, resized to ``S``) and ``grayscale`` converts that fraction of
images to grey: the stronger augmentation Fini et al. (2023) found to matter most when
pretraining on small data. Evaluation and embedding caches use the model's own preprocessing
(``LoadedModel.preprocess``), exactly what the embedders do at search time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of the training augmentations (``enabled=False``: resize + centre crop only)."""

    enabled: bool = True
    resize_ratio: float = 1.125
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    crop_scale: tuple[float, float] | None = None
    grayscale: float = 0.0


def _size(preprocess_cfg: dict[str, Any]) -> int:
    size = preprocess_cfg.get("size", 224)
    return int(size[0] if isinstance(size, Sequence) else size)


def _normalise(preprocess_cfg: dict[str, Any]) -> list[Callable]:
    mean = tuple(preprocess_cfg.get("mean") or OPENAI_MEAN)
    std = tuple(preprocess_cfg.get("std") or OPENAI_STD)
    return [transforms.ToTensor(), transforms.Normalize(mean, std)]


def train_transform(
    preprocess_cfg: dict[str, Any], cfg: AugmentConfig = AugmentConfig()
) -> Callable[[Image.Image], torch.Tensor]:
    """The training transform for a model with ``preprocess_cfg`` (size, mean, std)."""
    size = _size(preprocess_cfg)
    if not cfg.enabled:
        steps = [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
        ]
        return transforms.Compose(steps + _normalise(preprocess_cfg))
    bicubic = transforms.InterpolationMode.BICUBIC
    steps: list[Callable]
    if cfg.crop_scale is not None:
        steps = [transforms.RandomResizedCrop(size, scale=tuple(cfg.crop_scale), interpolation=bicubic)]
    else:
        steps = [transforms.Resize(round(size * cfg.resize_ratio), interpolation=bicubic), transforms.RandomCrop(size)]
    if cfg.hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(cfg.hflip))
    if any((cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)):
        steps.append(transforms.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if cfg.grayscale > 0:
        steps.append(transforms.RandomGrayscale(cfg.grayscale))
    return transforms.Compose(steps + _normalise(preprocess_cfg))

