"""The one place that knows the training losses: a registry of self-describing entries and
:func:`create_loss`, as open_clip's ``create_loss``.

Each entry says which stage it trains, what it is in one line (the ``--method`` help of
``clip-model finetune`` is made from these lines) and whether it needs captions, and builds its
trainer (:mod:`clip_ingest.model.trainers`) from a stage config. A stage asks the factory for
its loss by name and knows no loss class; adding a loss is its class in
:mod:`clip_ingest.model.losses`, the trainer that applies it in :mod:`clip_ingest.model.trainers`,
one entry here and the settings it reads in the stage config (``--method`` follows).

Describing a loss imports no torch (``clip-model --help`` runs without it); building one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .trainers import LossInputs


def _class_trainer(cfg: Any, inputs: "LossInputs", loss: "Loss") -> Any:
    from .trainers import class_trainer

    return class_trainer(cfg, inputs, with_captions=loss.needs_captions)


def _contrastive_trainer(cfg: Any, inputs: "LossInputs", loss: "Loss") -> Any:
    from .trainers import contrastive_trainer

    return contrastive_trainer(cfg, inputs)


@dataclass(frozen=True)
class Loss:
    """A training loss as the stages and the CLI know it."""

    name: str
    stage: str
    """The stage it trains (``pretrain`` also names ``realign``'s)."""
    summary: str
    """One line: what it optimises (``--method`` help)."""
    needs_captions: bool
    trainer: Callable[[Any, "LossInputs", "Loss"], Any]
    """Builds its trainer from a stage config (imports torch when called)."""

    def build(self, cfg: Any, inputs: "LossInputs") -> Any:
        return self.trainer(cfg, inputs, self)


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("retrieval", "finetune", "ArcMargin on labels", False, _class_trainer),
    Loss("mcip", "finetune", "0.75 ArcMargin + 0.25 multi-caption ArcMargin (needs captions)", True, _class_trainer),
    Loss("contrastive", "pretrain", "symmetric InfoNCE on image-caption pairs", True, _contrastive_trainer),
)}
"""Every training loss by name: ``retrieval`` (2SFT stage 1: ArcMargin on class labels),
``mcip`` (``arc_weight`` x ArcMargin + ``caption_weight`` x Multi-Caption ArcMargin over the
frozen text tower's embeddings of each image's captions) and ``contrastive`` (symmetric InfoNCE:
in ``pretrain`` with optional label smoothing, word dropout and a two-view image term, in
``realign`` against the cached image vectors)."""


def losses_for(stage: str) -> tuple[str, ...]:
    """The names of the losses that train ``stage`` (``finetune``'s are its ``--method`` values)."""
    return tuple(name for name, loss in LOSSES.items() if loss.stage == stage)


def describe(stage: str) -> str:
    """``name: summary; ...`` of the losses of ``stage``, ending in a full stop (CLI help)."""
    return "; ".join(f"{name}: {LOSSES[name].summary}" for name in losses_for(stage)) + "."


def create_loss(name: str, cfg: Any, inputs: "LossInputs") -> Any:
    """The trainer of the loss ``name`` built from the stage config ``cfg``: an ``nn.Module``
    with ``forward(batch) -> loss`` and ``param_groups(lr, weight_decay)``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name].build(cfg, inputs)
