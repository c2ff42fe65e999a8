"""What a guided adaptation runs, decided from the base model's size and the user's data.

Learning rates: fine-tuning a pretrained tower wants a step size that shrinks with its size.
The paper fine-tunes ViT-L/14 at 1e-6; our small research models (a few million parameters,
trained here) need about 1e-3 to move at all (at 1e-6 their loss barely changes). The grid
has two values around the size's usual rate and validation picks one; the epoch is picked
within each run by validation (the best epoch's weights are kept).

=====================  ========================  ===============  ==========
image tower            fine-tuning lr grid       realignment lr   example
=====================  ========================  ===============  ==========
< 20 M parameters      3e-4, 1e-3                3e-4             the starter
20 M - 200 M           3e-6, 1e-5                1e-5             ViT-B
>= 200 M               1e-6, 3e-6                1e-5             ViT-L/14
=====================  ========================  ===============  ==========

Epochs: 6 below 500 training images, 4 below 5,000, 3 above (the best epoch is kept, so
more only costs time). Batch: 64, or an eighth of the training images when that is fewer
(at least 8): a few hundred images still take several steps per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

SMALL_TOWER = 20_000_000
LARGE_TOWER = 200_000_000


@dataclass(frozen=True)
class AdaptPlan:
    """The settings of one guided run (every field can be given instead of derived)."""

    lrs: tuple[float, ...]
    epochs: int
    batch_size: int
    realign_lr: float
    realign_epochs: int = 2

    def describe(self) -> str:
        grid = ", ".join(f"{lr:g}" for lr in self.lrs)
        return (f"learning rates {grid} (validation picks one), up to {self.epochs} epochs (validation picks "
                f"the epoch), batch {self.batch_size}; realignment {self.realign_epochs} epochs at {self.realign_lr:g}")


def image_tower_size(model: nn.Module) -> int:
    """Parameters of the image tower (``visual``), what fine-tuning trains."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("visual."))


def default_lrs(tower_parameters: int) -> tuple[tuple[float, ...], float]:
    """(fine-tuning lr grid, realignment lr) for an image tower of this size (table above)."""
    if tower_parameters < SMALL_TOWER:
        return (3e-4, 1e-3), 3e-4
    if tower_parameters < LARGE_TOWER:
        return (3e-6, 1e-5), 1e-5
    return (1e-6, 3e-6), 1e-5


def default_epochs(train_images: int) -> int:
    return 6 if train_images < 500 else 4 if train_images < 5000 else 3


def default_batch_size(train_images: int) -> int:
    return max(8, min(64, train_images // 8))


def make_plan(tower_parameters: int, train_images: int, *, lrs: Sequence[float] = (), epochs: int | None = None,
              batch_size: int | None = None, realign_lr: float | None = None) -> AdaptPlan:
    """The plan for this base and data; given values win over the derived ones."""
    grid, realign = default_lrs(tower_parameters)
    return AdaptPlan(
        lrs=tuple(lrs) or grid,
        epochs=epochs or default_epochs(train_images),
        batch_size=batch_size or default_batch_size(train_images),
        realign_lr=realign_lr or realign,
    )


def expectations(train_images: int, train_labels: int, held_out_images: int) -> str:
    """What a user can expect from this much data, said before training starts."""
    lines = [f"{train_images} training images over {train_labels} labels; {held_out_images} held-out images judge the result."]
    if train_images < 1000:
        lines.append(
            "With a few hundred images, expect a gain of a few points of image mAP at best, mostly for things like "
            "your training labels; the held-out confidence interval is wide (several points), so a small gain may "
            "not be provable. The text guard and WiSE-FT keep text search near the base's; if validation finds "
            "nothing better, the base is kept."
        )
    if train_labels < 10:
        lines.append("Fewer than 10 training labels: the model learns few distinctions; more labels help more than "
                     "more photos of the same ones.")
    return "\n".join(lines)
