"""Validation scores for model selection and early stopping.

The test benchmarks (ETH-80 unseen objects, Caltech-101, Flickr8k) must never choose an
epoch or a setting, or their numbers stop meaning anything. Each stage therefore scores
its own validation split (``val_fraction`` of its training data, held out by
:func:`~clip_ingest.model.data.split_samples`) after every epoch with the measure that
stage is trained for; :func:`~clip_ingest.model.train.fit` keeps the best epoch.

=====================  ===============================================  ===========================
class                  score (higher is better)                         used by
=====================  ===============================================  ===========================
ImageRetrievalScore    image->image mAP by class label among the        ``finetune`` (both methods)
                       validation images
CaptionMatchScore      image->caption R@1 over the deduplicated          ``pretrain``, ``realign``
                       validation captions (zero-shot style)
=====================  ===============================================  ===========================
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from .data import Sample
from .features import embed_samples, embed_texts
from .metrics import caption_match_accuracy, mean_average_precision

log = logging.getLogger(__name__)


class ValidationScore(Protocol):
    """A score of the model's current weights on a validation split (higher is better)."""

    name: str

    def __call__(self) -> float: ...


class ImageRetrievalScore:
    """Image->image mAP among the validation images, relevant = same class label.

    Expects validation samples with labels where at least one label occurs twice
    (:meth:`build` returns ``None`` otherwise). Embeds the images with the current image
    tower on every call (eval preprocessing, no augmentation).
    """

    name = "val image mAP"

    def __init__(self, model: nn.Module, samples: Sequence[Sample], preprocess: Callable[[Any], torch.Tensor],
                 device: torch.device, batch_size: int = 64) -> None:
        self.model, self.samples, self.preprocess = model, list(samples), preprocess
        self.device, self.batch_size = device, batch_size

    @classmethod
    def build(cls, model: nn.Module, samples: Sequence[Sample], preprocess: Callable[[Any], torch.Tensor],
              device: torch.device, batch_size: int = 64) -> "ImageRetrievalScore | None":
        """The score, or ``None`` (with a log line) when no two validation images share a label."""
        counts = Counter(s.label for s in samples if s.label is not None)
        if not any(n >= 2 for n in counts.values()):
            if samples:
                log.warning("validation: no two of the %d validation images share a label; no model selection", len(samples))
            return None
        return cls(model, [s for s in samples if s.label is not None], preprocess, device, batch_size)

    def __call__(self) -> float:
        emb, indices, _ = embed_samples(
            self.model, self.samples, self.preprocess, device=self.device, batch_size=self.batch_size
        )
        return mean_average_precision(emb.numpy(), [self.samples[i].label for i in indices.tolist()])


class CaptionMatchScore:
    """Image->caption R@1: does each validation image rank one of its own captions first
    among all distinct validation captions?

    With class-template captions this is zero-shot classification on the validation split;
    with unique captions it is image->text R@1. ``image_embeddings`` fixes the image side
    (realignment: the image tower is frozen and never runs again); without it the images are
    embedded with the current image tower on every call (pretraining).
    """

    name = "val caption R@1"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        samples: Sequence[Sample],
        device: torch.device,
        *,
        preprocess: Callable[[Any], torch.Tensor] | None = None,
        image_embeddings: torch.Tensor | None = None,
        batch_size: int = 64,
    ) -> None:
        if (preprocess is None) == (image_embeddings is None):
            raise ValueError("give either preprocess (embed images each call) or fixed image_embeddings")
        if image_embeddings is not None and len(image_embeddings) != len(samples):
            raise ValueError("image_embeddings needs one row per sample")
        if not samples or not all(s.captions for s in samples):
            raise ValueError("every validation sample needs a caption")
        self.model, self.tokenizer, self.samples, self.device = model, tokenizer, list(samples), device
        self.preprocess, self.image_embeddings, self.batch_size = preprocess, image_embeddings, batch_size
        self.pool = sorted({c for s in self.samples for c in s.captions})
        column = {c: j for j, c in enumerate(self.pool)}
        self.positives = [frozenset(column[c] for c in s.captions) for s in self.samples]

    def __call__(self) -> float:
        if self.image_embeddings is not None:
            images, positives = self.image_embeddings, self.positives
        else:
            images, indices, _ = embed_samples(
                self.model, self.samples, self.preprocess, device=self.device, batch_size=self.batch_size
            )
            positives = [self.positives[i] for i in indices.tolist()]
        texts = embed_texts(self.model, self.tokenizer, self.pool, device=self.device)
        return caption_match_accuracy(images.float().cpu().numpy(), texts.cpu().numpy(), positives)
