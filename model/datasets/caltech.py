"""Caltech-101 (CC BY 4.0): ``caltech101/<class>/*.jpg`` and the standard split listed in
``caltech101/train.txt`` / ``test.txt`` (one relative path a line, its first folder the class)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .class_names import class_captions
from .common import evenly, require


def read_split(root: Path, split: str) -> list[tuple[Path, str]]:
    """(path, class) of every image listed in the data root's ``caltech101/<split>.txt``, in its order;
    lines are stripped of surrounding whitespace and blank ones skipped."""
    base = require(root / "caltech101", "caltech101")
    listing = require(base / f"{split}.txt", "caltech101")
    entries = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
    return [(base / rel, rel.split("/", 1)[0]) for rel in entries if rel]


def load_caltech101(root: Path, split: str, max_per_class: int | None = None) -> tuple[list[Path], list[str]]:
    """Paths and class names of the ``split``, grouped by class in name order (at most
    ``max_per_class`` each, evenly spaced)."""
    by_class: dict[str, list[Path]] = {}
    for path, label in read_split(root, split):
        by_class.setdefault(label, []).append(path)
    paths, labels = [], []
    for name in sorted(by_class):
        chosen = evenly(by_class[name], max_per_class)
        paths += chosen
        labels += [name] * len(chosen)
    return paths, labels


def caltech101_rows(root: Path, split: str = "train") -> Iterator[dict]:
    """Manifest rows of the ``split`` in listing order, with varied class captions."""
    for path, label in read_split(root, split):
        yield {"path": str(path), "label": label, "captions": class_captions(label)}
