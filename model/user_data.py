"""A user's labelled images, split three ways *by label*: training, validation and held-out.

A user's folder is a class-per-folder tree (``FOLDER/<label>/...``) or a manifest (see
:mod:`clip_ingest.model.data`). In a folder, an image may carry captions in a text sidecar
``IMAGE.txt`` (or ``IMAGE.EXT.txt``), one caption per line.

The split is by label: every image of a label lands on the same side, so the held-out set
measures what a user's new collection will hold, things the model never saw in training, and
validation (which picks learning rate, epoch and method) behaves like it. A random split of
images would hold out other photos of the training instances and reward memorising them.
Sides are chosen by a seeded hash of each label, so adding labels never moves old ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .adapt_defaults import DEFAULT_HELD_OUT_FRACTION, DEFAULT_VAL_FRACTION
from .data import DataError, Sample, load_samples

MIN_LABELS_PER_SIDE = 2
"""Image->image retrieval by label needs two labels on a side to rank anything against."""


def caption_sidecar(path: Path) -> Path | None:
    """The caption sidecar of an image: ``IMAGE.EXT.txt`` or ``IMAGE.txt``, if one exists."""
    for candidate in (path.with_name(path.name + ".txt"), path.with_suffix(".txt")):
        if candidate.is_file():
            return candidate
    return None


def with_sidecar_captions(samples: Sequence[Sample]) -> list[Sample]:
    """``samples`` with the captions of their text sidecars added (one caption per line)."""
    out = []
    for s in samples:
        sidecar = caption_sidecar(Path(s.path))
        if sidecar is None:
            out.append(s)
            continue
        lines = [line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines()]
        out.append(Sample(s.path, s.label, tuple(dict.fromkeys([*s.captions, *(c for c in lines if c)]))))
    return out


def load_user_samples(source: str | os.PathLike) -> list[Sample]:
    """Labelled samples of a folder (with sidecar captions) or a manifest; unlabelled images are
    left out (they cannot be judged by label)."""
    samples = load_samples(source)
    if Path(source).is_dir():
        samples = with_sidecar_captions(samples)
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        raise DataError(f"{source}: no labelled images (put them in one folder per label, or give a manifest with 'label')")
    return labelled


@dataclass(frozen=True)
class UserSplit:
    """Training, validation and held-out samples of disjoint label sets."""

    train: list[Sample]
    val: list[Sample]
    held_out: list[Sample]
    seed: int
    held_out_fraction: float
    val_fraction: float

    @property
    def has_captions(self) -> bool:
        return any(s.captions for s in self.train + self.val + self.held_out)

    def summary(self) -> dict[str, object]:
        """Counts per side (images, labels, captioned images) and the split rule, for the model card."""
        def side(samples: list[Sample]) -> dict[str, int]:
            return {"images": len(samples), "labels": len({s.label for s in samples}),
                    "captioned": sum(1 for s in samples if s.captions)}

        return {"train": side(self.train), "val": side(self.val), "held_out": side(self.held_out),
                "split": {"by": "label", "seed": self.seed, "held_out_fraction": self.held_out_fraction,
                          "val_fraction": self.val_fraction}}


def _label_order(labels: Sequence[str], seed: int) -> list[str]:
    return sorted(labels, key=lambda label: hashlib.sha256(f"{seed}:{label}".encode()).digest())


def split_by_label(
    samples: Sequence[Sample],
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
) -> UserSplit:
    """Split ``samples`` into training / validation / held-out by label.

    The labels are ordered by a seeded hash; the first ``round(held_out_fraction * n)`` (at least
    2) are held out, the next ``round(val_fraction * n)`` (at least 2, or none with
    ``val_fraction=0``) validate, the rest train. Raises :class:`DataError` when there are too
    few labels for every side to have two.
    """
    if not 0 < held_out_fraction < 1 or not 0 <= val_fraction < 1 or held_out_fraction + val_fraction >= 1:
        raise ValueError("held_out_fraction in (0, 1), val_fraction in [0, 1) and their sum below 1")
    labels = _label_order(sorted({s.label for s in samples if s.label is not None}), seed)
    n_held = max(MIN_LABELS_PER_SIDE, round(held_out_fraction * len(labels)))
    n_val = max(MIN_LABELS_PER_SIDE, round(val_fraction * len(labels))) if val_fraction > 0 else 0
    if len(labels) - n_held - n_val < MIN_LABELS_PER_SIDE:
        need = n_held + n_val + MIN_LABELS_PER_SIDE
        raise DataError(f"{len(labels)} labels are too few to hold some out: need at least {need} "
                        f"({n_held} held out, {n_val} for validation, 2 to train)")
    held, val = set(labels[:n_held]), set(labels[n_held:n_held + n_val])
    return UserSplit(
        train=[s for s in samples if s.label not in held and s.label not in val],
        val=[s for s in samples if s.label in val],
        held_out=[s for s in samples if s.label in held],
        seed=seed, held_out_fraction=held_out_fraction, val_fraction=val_fraction,
    )
