"""The modules a training stage hands to :func:`~clip_ingest.model.train.fit`: the model with
its loss, ``forward(batch) -> loss``, and how each is built from a stage config
(:func:`class_trainer`, :func:`contrastive_trainer`), which
:func:`clip_ingest.model.loss_factory.create_loss` calls by loss name.

=====================  ===========================================  ===============================
trainer                loss                                         stages
=====================  ===========================================  ===============================
:class:`ClassTrainer`  ArcMargin on class labels, plus               ``finetune`` (``retrieval``,
                       MC-ArcMargin on captions for MCIP            ``mcip``)
:class:`Contrastive    symmetric InfoNCE between images (or their   ``pretrain``, ``realign``
Trainer`              cached vectors) and one caption of each
=====================  ===========================================  ===============================
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .data import CAPTIONS_ADVICE, Batch, DataError, class_index
from .features import embed_texts
from .losses import ArcMarginLoss, InfoNCELoss, MultiCaptionArcMarginLoss, caption_masks
from .train import decay_param_groups


@dataclass(frozen=True)
class LossInputs:
    """What a loss is built from: the model being trained, its tokenizer, the training samples
    (their labels and captions), the embedding width, the device, and for realignment the cached
    image vectors (one row per sample)."""

    model: nn.Module
    tokenizer: Any
    samples: Sequence[Any]
    embed_dim: int
    device: torch.device | None = None
    image_bank: torch.Tensor | None = None


class ClassTrainer(nn.Module):
    """Image tower with ArcMargin on class labels, plus MC-ArcMargin on captions for MCIP.

    The text tower is frozen, so the captions are embedded once up front (``caption_bank``)
    instead of in every step: the same numbers, without re-running a tower that does not
    change.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: torch.Tensor,
        arc: ArcMarginLoss,
        arc_weight: float,
        captions: tuple[MultiCaptionArcMarginLoss, torch.Tensor, list[list[int]], float, bool] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.arc = arc
        self.arc_weight = arc_weight
        self.register_buffer("labels", labels, persistent=False)
        self.mc = None
        if captions is not None:
            self.mc, bank, self.caption_ids, self.caption_weight, self.same_class_negatives = captions
            self.register_buffer("caption_bank", bank, persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        emb = self.model.encode_image(batch.pixels)
        labels = self.labels[batch.indices]
        loss = self.arc_weight * self.arc(emb, labels)
        if self.mc is not None:
            ids, pos, neg = caption_masks(
                [self.caption_ids[i] for i in batch.indices.tolist()],
                labels,
                same_class_negatives=self.same_class_negatives,
            )
            device = emb.device
            loss = loss + self.caption_weight * self.mc(
                emb, self.caption_bank[ids.to(device)], pos.to(device), neg.to(device)
            )
        return loss

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups: the trainable model parameters, then the ArcMargin proxies at their own rate."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return decay_param_groups(named, lr, weight_decay) + self.arc.param_groups(lr)


def drop_words(text: str, rate: float, generator: random.Random) -> str:
    """``text`` with each word dropped with probability ``rate`` (at least one word is kept).

    The simplest of the text augmentations of Fini et al. (2023, EDA-style random deletion): on
    small caption sets it keeps the text tower from memorising exact strings.
    """
    if rate <= 0:
        return text
    words = text.split()
    kept = [w for w in words if generator.random() >= rate]
    return " ".join(kept) if kept else (generator.choice(words) if words else text)


class ContrastiveTrainer(nn.Module):
    """Symmetric InfoNCE between images and one random caption of each (per step).

    With ``image_bank`` the image embeddings come from that cache (realignment: the image
    tower is never run); otherwise from ``model.encode_image`` on the batch pixels.
    ``label_smoothing`` and ``word_dropout`` are the small-data regularisers of Fini et al.
    (2023); both default to off. With ``image_ssl_weight`` the batch holds two views of each
    image: the first pairs with the caption, and an InfoNCE at the fixed
    ``image_ssl_temperature`` pulls the two views together (see
    :class:`~clip_ingest.model.stages.PretrainConfig`). :meth:`after_step` clamps the
    temperature parameter after each optimiser step (see :meth:`InfoNCELoss.clamp_logit_scale`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        captions: Sequence[tuple[str, ...]],
        image_bank: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
        word_dropout: float = 0.0,
        image_ssl_weight: float = 0.0,
        image_ssl_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if image_ssl_weight < 0 or image_ssl_temperature <= 0:
            raise ValueError("image_ssl_weight must be >= 0 and image_ssl_temperature > 0")
        self.model = model
        self.tokenizer = tokenizer
        self.captions = list(captions)
        self.loss = InfoNCELoss(label_smoothing)
        self.view_loss = InfoNCELoss()
        self.image_ssl_weight = image_ssl_weight
        self.register_buffer("view_log_scale", torch.tensor(math.log(1.0 / image_ssl_temperature)), persistent=False)
        self.word_dropout = word_dropout
        self._words = random.Random(torch.initial_seed())
        self.register_buffer("image_bank", image_bank, persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        """``batch``: images (a :class:`Batch`) or, with ``image_bank``, just their positions."""
        indices = batch.indices.tolist()
        picks = torch.randint(0, 2**31 - 1, (len(indices),)).tolist()
        texts = [self.captions[i][p % len(self.captions[i])] for i, p in zip(indices, picks)]
        if self.training and self.word_dropout > 0:
            texts = [drop_words(t, self.word_dropout, self._words) for t in texts]
        device = batch.indices.device
        txt = self.model.encode_text(self.tokenizer(texts).to(device))
        if self.image_bank is not None:
            return self.loss(self.image_bank[batch.indices], txt, self.model.logit_scale)
        if batch.pixels.ndim == 5:  # two views of each image
            views = self.model.encode_image(batch.pixels.flatten(0, 1)).unflatten(0, (len(indices), 2))
            loss = self.loss(views[:, 0], txt, self.model.logit_scale)
            return loss + self.image_ssl_weight * self.view_loss(views[:, 0], views[:, 1], self.view_log_scale)
        return self.loss(self.model.encode_image(batch.pixels), txt, self.model.logit_scale)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups of the model parameters that train."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return decay_param_groups(named, lr, weight_decay)

    def after_step(self) -> None:
        """Keep ``exp(logit_scale)`` within CLIP's ``[1, 100]``."""
        InfoNCELoss.clamp_logit_scale(self.model.logit_scale)


def class_trainer(cfg: Any, inputs: LossInputs, *, with_captions: bool) -> ClassTrainer:
    """ArcMargin on the samples' labels (``cfg.arc_*``, ``proxy_lr_multiplier``) and, ``with_captions``,
    MC-ArcMargin over the frozen text tower's embeddings of their captions (``cfg.caption_*``)."""
    classes = class_index(inputs.samples)
    labels = torch.tensor([classes[s.label] for s in inputs.samples], dtype=torch.long)
    arc = ArcMarginLoss(len(classes), inputs.embed_dim, scale=cfg.arc_scale, margin=cfg.arc_margin,
                        proxy_lr_multiplier=cfg.proxy_lr_multiplier)
    if not with_captions:
        return ClassTrainer(inputs.model, labels, arc, 1.0)
    pool = sorted({c for s in inputs.samples for c in s.captions})
    if not pool:
        raise DataError(f"mcip needs captions: {CAPTIONS_ADVICE}")
    column = {c: j for j, c in enumerate(pool)}
    bank = embed_texts(inputs.model, inputs.tokenizer, pool, device=inputs.device)
    ids = [[column[c] for c in s.captions] for s in inputs.samples]
    mc = MultiCaptionArcMarginLoss(scale=cfg.caption_scale, margin=cfg.caption_margin, variant=cfg.caption_loss)
    return ClassTrainer(inputs.model, labels, arc, cfg.arc_weight, (mc, bank, ids, cfg.caption_weight,
                                                                    cfg.same_class_negatives))


def contrastive_trainer(cfg: Any, inputs: LossInputs) -> ContrastiveTrainer:
    """InfoNCE against ``inputs.image_bank`` (realignment), else on pixels with the pretraining
    regularisers of ``cfg``."""
    captions = [s.captions for s in inputs.samples]
    if inputs.image_bank is not None:
        return ContrastiveTrainer(inputs.model, inputs.tokenizer, captions, inputs.image_bank)
    return ContrastiveTrainer(
        inputs.model, inputs.tokenizer, captions,
        label_smoothing=cfg.label_smoothing, word_dropout=cfg.word_dropout,
        image_ssl_weight=cfg.image_ssl_weight, image_ssl_temperature=cfg.image_ssl_temperature,
    )
