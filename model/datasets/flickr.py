"""Flickr8k (research use only): ``<folder>/captions.csv`` (``image,caption``, five human
captions per image) and ``<folder>/images/``. ``flickr8k`` is the 1,000-image evaluation set,
``flickr8k_train`` the training set; both are read the same way."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from .common import evenly, require


def read_captions(folder: Path, dataset: str) -> list[tuple[str, str]]:
    """(image name, caption) of ``folder/captions.csv`` in file order, each caption's whitespace
    collapsed to single spaces; empty captions are skipped."""
    with require(require(folder, dataset) / "captions.csv", dataset).open(newline="", encoding="utf-8") as f:
        pairs = [(row["image"], " ".join(row["caption"].split())) for row in csv.DictReader(f)]
    return [(image, caption) for image, caption in pairs if caption]


def load_flickr8k(root: Path, max_images: int | None = None) -> tuple[list[Path], list[str], list[int]]:
    """Image paths, captions and each caption's image index of the data root's ``flickr8k``
    evaluation set (at most ``max_images`` images, evenly spaced by name)."""
    base = root / "flickr8k"
    pairs = read_captions(base, "flickr8k")
    names = evenly(sorted({image for image, _ in pairs}), max_images)
    index = {name: i for i, name in enumerate(names)}
    captions = [(caption, index[image]) for image, caption in pairs if image in index]
    return [base / "images" / n for n in names], [c for c, _ in captions], [i for _, i in captions]


def flickr8k_rows(folder: Path) -> Iterator[dict]:
    """One manifest row per image of a Flickr8k folder with its human captions, labelled by the
    image name (research-use data)."""
    captions: dict[str, list[str]] = {}
    for image, caption in read_captions(folder, folder.name):
        captions.setdefault(image, []).append(caption)
    for name in sorted(captions):
        yield {"path": str(folder / "images" / name), "label": f"flickr/{name}", "captions": captions[name]}
