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
TextRetrievalScore     text->image R@k over held-out captioned images    the guard of ``finetune``
GuardedScore           a primary score, counted only while a guard       ``finetune`` with
                       score stays within a tolerance of its value       ``text_guard_data``
                       before training
=====================  ===============================================  ===========================

``GuardedScore`` turns "best image retrieval that keeps text retrieval" into one number, so the
same best-epoch machinery (and a learning-rate choice read off the stage's metadata) applies to
it: an epoch whose guard fell more than ``tolerance`` below its starting value scores
``guard - floor`` (negative), below every epoch that kept it, and the least damaging of them
wins when none did.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from .data import Sample
from .features import embed_samples, embed_texts
from .metrics import caption_match_accuracy, mean_average_precision, text_to_image_recall

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


class TextRetrievalScore:
    """Text->image R@k over held-out captioned images: each caption ranks all of them.

    The images are embedded with the current image tower on every call, the captions only on
    the first: it guards fine-tuning, which freezes the text tower.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, samples: Sequence[Sample],
                 preprocess: Callable[[Any], torch.Tensor], device: torch.device, *, k: int = 5,
                 batch_size: int = 64) -> None:
        self.samples = [s for s in samples if s.captions]
        if len(self.samples) <= k:
            raise ValueError(f"text->image R@{k} needs more than {k} captioned images, got {len(self.samples)}")
        self.model, self.tokenizer, self.preprocess, self.device = model, tokenizer, preprocess, device
        self.k, self.batch_size = k, batch_size
        self.name = f"val t2i R@{k}"
        self._texts: torch.Tensor | None = None

    def __call__(self) -> float:
        images, indices, _ = embed_samples(
            self.model, self.samples, self.preprocess, device=self.device, batch_size=self.batch_size
        )
        kept = indices.tolist()
        captions = [c for i in kept for c in self.samples[i].captions]
        owner = [row for row, i in enumerate(kept) for _ in self.samples[i].captions]
        if self._texts is None or len(self._texts) != len(captions):  # again only if an image failed to decode
            self._texts = embed_texts(self.model, self.tokenizer, captions, device=self.device)
        recall = text_to_image_recall(self._texts.cpu().numpy(), images.float().cpu().numpy(), owner, ks=(self.k,))
        return recall[f"R@{self.k}"]


class GuardedScore:
    """``primary`` while ``guard`` stays at least its pre-training value minus ``tolerance``.

    The guard is measured once at construction (the starting model, e.g. the base before
    fine-tuning) and after every epoch; ``history`` keeps ``(primary, guard)`` of each epoch
    scored by this object (a resumed run starts it again; the fit's scores keep them all).
    """

    def __init__(self, primary: ValidationScore, guard: ValidationScore, tolerance: float) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        self.primary, self.guard, self.tolerance = primary, guard, tolerance
        self.start = float(guard())
        self.floor = self.start - tolerance
        self.name = f"{primary.name} while {guard.name} >= {self.floor:.4f} (start {self.start:.4f})"
        self.history: list[tuple[float, float]] = []

    def __call__(self) -> float:
        primary, guard = float(self.primary()), float(self.guard())
        self.history.append((primary, guard))
        kept = guard >= self.floor - 1e-9  # recalls are multiples of 1/captions: no float noise at the floor
        log.info("validation: %s %.4f, %s %.4f (floor %.4f)%s", self.primary.name, primary, self.guard.name,
                 guard, self.floor, "" if kept else ": guard broken")
        return primary if kept else guard - self.floor
