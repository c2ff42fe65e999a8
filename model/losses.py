"""Training losses of the 2SFT and MCIP methods (Schall et al., SISAP 2024) and plain CLIP.

Every loss is an ``nn.Module`` that documents what it expects and returns, in the
style of sentence-transformers; :mod:`clip_ingest.model.loss_factory` names them for the
stages and builds them from a stage config:

=============================  ==================================================  =================
loss                           inputs                                              used by
=============================  ==================================================  =================
:class:`ArcMarginLoss`         image embeddings ``(B, D)``, class ids ``(B,)``     finetune, MCIP
:class:`MultiCaptionArcMargin  image embeddings ``(B, D)``, caption embeddings     MCIP
Loss`                          ``(C, D)``, boolean ``positive``/``negative``
                               masks ``(B, C)``
:class:`InfoNCELoss`           image ``(B, D)`` and text ``(B, D)`` embeddings of  pretrain, realign
                               matching pairs, a log logit scale
=============================  ==================================================  =================

Embeddings need not be normalised: every loss L2-normalises its inputs, because the
retrieval vectors are compared by cosine similarity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0
"""CLIP's cap on the InfoNCE temperature scale (``exp(logit_scale) <= 100``)."""


def margin_cosine(cos: torch.Tensor, margin: float) -> torch.Tensor:
    """``cos(theta + margin)`` for ``cos = cos(theta)``, ArcFace style.

    Where ``theta + margin`` would pass ``pi`` (the function stops decreasing there)
    the usual linear fallback ``cos(theta) - sin(pi - m) * m`` keeps the logit monotone.
    """
    cos = cos.clamp(-1.0, 1.0)
    sine = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
    phi = cos * math.cos(margin) - sine * math.sin(margin)
    threshold = math.cos(math.pi - margin)
    fallback = cos - math.sin(math.pi - margin) * margin
    return torch.where(cos > threshold, phi, fallback)


class ArcMarginLoss(nn.Module):
    """ArcFace: classification against learnable class proxies with an additive angular margin.

    Expects image embeddings ``(B, D)`` and integer class ids ``(B,)`` in ``[0, K)``;
    returns the mean cross-entropy of the logits ``s * cos(theta)``, where the angle to
    the true class proxy is enlarged by ``m``. The proxies ``W`` (``K x D``, Xavier
    initialised) exist only to shape the embedding space and are discarded after
    training. Following the paper's code they learn ``proxy_lr_multiplier`` (100x)
    faster than the backbone: build the optimizer with :meth:`param_groups`.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        *,
        scale: float = 30.0,
        margin: float = 0.1,
        proxy_lr_multiplier: float = 100.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("ArcMarginLoss needs at least one class")
        self.scale = scale
        self.margin = margin
        self.proxy_lr_multiplier = proxy_lr_multiplier
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scaled, margin-adjusted logits ``(B, K)`` (exposed for evaluation and tests)."""
        cos = F.normalize(embeddings.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T
        true = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(true, margin_cosine(cos, self.margin), cos)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def param_groups(self, base_lr: float) -> list[dict]:
        """Optimizer groups for the proxies: ``base_lr * proxy_lr_multiplier``, no weight decay."""
        return [{"params": [self.weight], "lr": base_lr * self.proxy_lr_multiplier, "weight_decay": 0.0}]


class MultiCaptionArcMarginLoss(nn.Module):
    """MC-ArcMargin: captions of the batch act as the class proxies of ArcMargin.

    Expects image embeddings ``(B, D)``, embeddings of every caption in the batch
    ``(C, D)`` (from the frozen text tower) and two boolean masks ``(B, C)``:
    ``positive[i, j]`` says caption ``j`` describes image ``i``; ``negative[i, j]``
    (default: every non-positive) says it counts against image ``i``. Captions that are
    neither are left out of image ``i``'s softmax. The margin is added to the angles of
    positives only; the target distribution is uniform over an image's positives.
    ``variant="paper"`` (the default) is the loss as the paper writes it: the mean over
    images with at least one positive caption, so an image with no captions contributes
    nothing (a batch without any gives a zero loss that still belongs to the graph).
    ``variant="reference"`` is what the authors' code computes: each image's loss gains
    ``0.1 * max_j -(1 - t_j) log p_j`` (the largest weighted caption term, where ``t`` is the
    target distribution) and the mean runs over the whole batch, images without captions
    included. ``paper`` is the default: on a fine-tuning validation split it did at least as well
    as ``reference`` (the measurement: ``docs/experiments.md``, section "The paper's experiment on
    the v2 photo-base").
    """

    VARIANTS = ("paper", "reference")
    REFERENCE_MAX_WEIGHT = 0.1

    def __init__(self, *, scale: float = 30.0, margin: float = 0.1, variant: str = "paper") -> None:
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, not {variant!r}")
        self.scale = scale
        self.margin = margin
        self.variant = variant

    def forward(
        self,
        image_embeddings: torch.Tensor,
        caption_embeddings: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if positive.dtype != torch.bool or (negative is not None and negative.dtype != torch.bool):
            raise TypeError("positive/negative masks must be boolean tensors")
        expected = (image_embeddings.shape[0], caption_embeddings.shape[0])
        if tuple(positive.shape) != expected:
            raise ValueError(f"positive mask has shape {tuple(positive.shape)}, expected {expected}")
        negative = ~positive if negative is None else negative & ~positive
        has_caption = positive.any(dim=1)
        if not bool(has_caption.any()):
            return image_embeddings.sum() * 0.0
        rows = has_caption if self.variant == "paper" else has_caption | negative.any(dim=1)
        img = F.normalize(image_embeddings[rows].float(), dim=-1)
        pos, neg = positive[rows], negative[rows]
        cos = img @ F.normalize(caption_embeddings.float(), dim=-1).T
        logits = self.scale * torch.where(pos, margin_cosine(cos, self.margin), cos)
        counted = pos | neg
        log_prob = F.log_softmax(logits.masked_fill(~counted, float("-inf")), dim=1).masked_fill(~counted, 0.0)
        target = pos.float() / pos.sum(dim=1, keepdim=True).clamp_min(1)
        per_image = -(target * log_prob).sum(dim=1)
        if self.variant == "reference":
            per_image = per_image + self.REFERENCE_MAX_WEIGHT * (-(1 - target) * log_prob).max(dim=1).values
        return per_image.mean()


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``features`` concatenated in rank order, gradients flowing to the local rows.

    A no-op outside a process group. Like open_clip's ``gather_features(..., gather_with_grad=True)``:
    ``torch.distributed.nn.all_gather`` back-propagates into every rank's own slice, so each
    process gets the gradient of the loss over the whole global batch.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(features), dim=0)


class InfoNCELoss(nn.Module):
    """Symmetric CLIP InfoNCE over matching image/text pairs, across every process of a run.

    Expects image embeddings ``(B, D)``, text embeddings ``(B, D)`` where row ``i`` of
    each belongs together, and the *log* of the logit scale (CLIP's learnable
    ``logit_scale`` parameter). Returns the mean of the image->text and text->image
    cross-entropies.

    Under ``torchrun`` the features of all ranks are gathered (:func:`gather_with_grad`), so N
    processes contrast each local row against N x B candidates, the same loss as one process
    on the concatenated batch (open_clip's ``ClipLoss``). ``label_smoothing`` (Fini et al.,
    2023, "Improved baselines for vision-language pre-training": 0.1 helps small data) is passed
    to the cross-entropies. The scale is used as given: the trainer clamps the parameter itself
    after each step (:meth:`clamp_logit_scale`), so its gradient never dies at the cap.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        self.label_smoothing = label_smoothing

    def forward(
        self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        if image_embeddings.shape != text_embeddings.shape:
            raise ValueError(
                f"image and text embeddings must pair up, got {tuple(image_embeddings.shape)} "
                f"and {tuple(text_embeddings.shape)}"
            )
        scale = logit_scale.float().exp()
        img = gather_with_grad(F.normalize(image_embeddings.float(), dim=-1))
        txt = gather_with_grad(F.normalize(text_embeddings.float(), dim=-1))
        logits = scale * img @ txt.T
        target = torch.arange(len(logits), device=logits.device)
        smooth = self.label_smoothing
        return (
            F.cross_entropy(logits, target, label_smoothing=smooth)
            + F.cross_entropy(logits.T, target, label_smoothing=smooth)
        ) / 2

    @staticmethod
    @torch.no_grad()
    def clamp_logit_scale(logit_scale: torch.Tensor) -> None:
        """Clamp the parameter in place to ``[0, log 100]`` (CLIP and the authors' code do this
        after each optimiser step; clamping inside the loss would zero its gradient for good)."""
        logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def caption_masks(
    caption_ids: list[list[int]], labels: torch.Tensor | None = None, *, same_class_negatives: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of :class:`MultiCaptionArcMarginLoss` for a batch.

    ``caption_ids[i]`` are the ids (into a caption bank) of image ``i``'s captions,
    possibly none. Returns ``(unique ids (C,), positive (B, C), negative (B, C))``: a
    caption shared by several images is one column, positive for each of them. With
    ``same_class_negatives=False`` (needs ``labels``) captions of *other* images of the
    same class are neither positive nor negative for image ``i``.
    """
    unique = sorted({c for ids in caption_ids for c in ids})
    column = {c: j for j, c in enumerate(unique)}
    positive = torch.zeros(len(caption_ids), len(unique), dtype=torch.bool)
    for i, ids in enumerate(caption_ids):
        positive[i, [column[c] for c in ids]] = True
    negative = ~positive
    if not same_class_negatives:
        if labels is None:
            raise ValueError("same_class_negatives=False needs the class labels")
        labels = labels.cpu()
        same_class = labels[:, None] == labels[None, :]
        owned_by_same_class = (same_class.float() @ positive.float()) > 0
        negative &= ~owned_by_same_class
    return torch.tensor(unique, dtype=torch.long), positive, negative
