"""CIFAR-10's test split, for true zero-shot classification (no training caption names its
classes in its prompts)."""

from __future__ import annotations

from pathlib import Path

from .common import DatasetMissingError, evenly, images_in, require


def load_cifar10(root: Path, max_per_class: int | None = None) -> tuple[list[Path], list[str]]:
    """Paths and class names of ``cifar10/test/<class>/*.jpg``."""
    base = require(root / "cifar10" / "test", "cifar10")
    paths, labels = [], []
    for name in sorted(p.name for p in base.iterdir() if p.is_dir()):
        chosen = evenly(images_in(base / name), max_per_class)
        paths += chosen
        labels += [name] * len(chosen)
    if not paths:
        raise DatasetMissingError(f"cifar10: no images under {base}")
    return paths, labels
