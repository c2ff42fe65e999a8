"""The one place that knows the training losses: a registry of self-describing entries and
:func:`create_loss`, as open_clip's ``create_loss``.

Each entry says which stage it trains, what it is in one line (the ``--method`` help of
``clip-model finetune`` is made from these lines) and whether it needs captions, and builds its
trainer (:mod:`clip_ingest.model.trainers`) from a stage config. A stage asks the factory for
its loss by name and knows no loss class; adding a loss is one class in
:mod:`clip_ingest.model.losses`, one entry here and the settings it reads in the stage config.

Describing a loss imports no torch (``clip-model --help`` runs without it); building one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

CAPTIONS_ADVICE = ("give them in a manifest ('captions' column), mine them (`clip-model mine-captions`), or make "
                   "them from the class names: --set \"templates=['a photo of a {label}.']\"")


@dataclass(frozen=True)
class LossInputs:
    """What a loss is built from: the model being trained, its tokenizer, the training samples
    (their labels and captions), the embedding width, the device, and for realignment the cached
    image vectors (one row per sample)."""

    model: Any
    tokenizer: Any
    samples: Sequence[Any]
    embed_dim: int
    device: Any = None
    image_bank: Any = None


class RetrievalLoss:
    """2SFT stage 1: ArcMargin on class labels (s, m and the proxies' lr from the config)."""

    name: ClassVar[str] = "retrieval"
    stage: ClassVar[str] = "finetune"
    summary: ClassVar[str] = "ArcMargin on labels"
    needs_captions: ClassVar[bool] = False

    @classmethod
    def build(cls, cfg: Any, inputs: LossInputs) -> Any:
        from .trainers import ClassTrainer

        labels, arc = cls._arc(cfg, inputs)
        return ClassTrainer(inputs.model, labels, arc, 1.0)

    @staticmethod
    def _arc(cfg: Any, inputs: LossInputs) -> tuple[Any, Any]:
        import torch

        from .data import class_index
        from .losses import ArcMarginLoss

        classes = class_index(inputs.samples)
        labels = torch.tensor([classes[s.label] for s in inputs.samples], dtype=torch.long)
        arc = ArcMarginLoss(len(classes), inputs.embed_dim, scale=cfg.arc_scale, margin=cfg.arc_margin,
                            proxy_lr_multiplier=cfg.proxy_lr_multiplier)
        return labels, arc


class McipLoss(RetrievalLoss):
    """MCIP: ``arc_weight`` x ArcMargin on labels + ``caption_weight`` x Multi-Caption ArcMargin
    over the frozen text tower's embeddings of each image's captions (``caption_loss``: the
    paper's formula or the authors' code)."""

    name: ClassVar[str] = "mcip"
    summary: ClassVar[str] = "0.75 ArcMargin + 0.25 multi-caption ArcMargin (needs captions)"
    needs_captions: ClassVar[bool] = True

    @classmethod
    def build(cls, cfg: Any, inputs: LossInputs) -> Any:
        from .data import DataError
        from .features import embed_texts
        from .losses import MultiCaptionArcMarginLoss
        from .trainers import ClassTrainer

        labels, arc = cls._arc(cfg, inputs)
        pool = sorted({c for s in inputs.samples for c in s.captions})
        if not pool:
            raise DataError(f"mcip needs captions: {CAPTIONS_ADVICE}")
        column = {c: j for j, c in enumerate(pool)}
        bank = embed_texts(inputs.model, inputs.tokenizer, pool, device=inputs.device)
        ids = [[column[c] for c in s.captions] for s in inputs.samples]
        mc = MultiCaptionArcMarginLoss(scale=cfg.caption_scale, margin=cfg.caption_margin, variant=cfg.caption_loss)
        return ClassTrainer(inputs.model, labels, arc, cfg.arc_weight,
                            (mc, bank, ids, cfg.caption_weight, cfg.same_class_negatives))


class ContrastiveLoss:
    """Symmetric InfoNCE on image-caption pairs; in ``pretrain`` with optional label smoothing,
    caption word dropout and an image-image term between two views, in ``realign`` against the
    cached image vectors."""

    name: ClassVar[str] = "contrastive"
    stage: ClassVar[str] = "pretrain"
    summary: ClassVar[str] = "symmetric InfoNCE on image-caption pairs"
    needs_captions: ClassVar[bool] = True

    @classmethod
    def build(cls, cfg: Any, inputs: LossInputs) -> Any:
        from .trainers import ContrastiveTrainer

        captions = [s.captions for s in inputs.samples]
        if inputs.image_bank is not None:
            return ContrastiveTrainer(inputs.model, inputs.tokenizer, captions, inputs.image_bank)
        return ContrastiveTrainer(
            inputs.model, inputs.tokenizer, captions,
            label_smoothing=cfg.label_smoothing, word_dropout=cfg.word_dropout,
            image_ssl_weight=cfg.image_ssl_weight, image_ssl_temperature=cfg.image_ssl_temperature,
        )


LOSSES: dict[str, type[RetrievalLoss] | type[ContrastiveLoss]] = {
    cls.name: cls for cls in (RetrievalLoss, McipLoss, ContrastiveLoss)
}
"""Every training loss by name."""


def losses_for(stage: str) -> tuple[str, ...]:
    """The names of the losses that train ``stage`` (``finetune``'s are its ``--method`` values)."""
    return tuple(name for name, cls in LOSSES.items() if cls.stage == stage)


def describe(stage: str) -> str:
    """``name: summary; ...`` of the losses of ``stage``, ending in a full stop (CLI help)."""
    return "; ".join(f"{name}: {LOSSES[name].summary}" for name in losses_for(stage)) + "."


def create_loss(name: str, cfg: Any, inputs: LossInputs) -> Any:
    """The trainer of the loss ``name`` built from the stage config ``cfg``: an ``nn.Module``
    with ``forward(batch) -> loss`` and ``param_groups(lr, weight_decay)``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name].build(cfg, inputs)
