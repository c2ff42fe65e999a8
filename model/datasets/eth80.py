"""ETH-80: 8 categories x 10 objects x 41 views. Objects 7-10 are the test benchmark's, 1-6 are
for training (and the ``eth80-val`` validation benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .common import DatasetMissingError, evenly, images_in, require

EVAL_OBJECTS = (7, 8, 9, 10)
TRAIN_OBJECTS = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Eth80Split:
    """ETH-80 images with their object id (``cup7``) and category (``cup``)."""

    paths: list[Path]
    objects: list[str]
    categories: list[str]


def load_eth80(root: Path, objects: Sequence[int] = EVAL_OBJECTS, max_per_class: int | None = None) -> Eth80Split:
    """``eth80/<category>/<category><n>/*.jpg`` for object numbers ``objects``."""
    base = require(root / "eth80", "eth80")
    paths, object_ids, categories = [], [], []
    for category in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for n in objects:
            folder = base / category / f"{category}{n}"
            if not folder.is_dir():
                continue
            for path in evenly(images_in(folder), max_per_class):
                paths.append(path)
                object_ids.append(folder.name)
                categories.append(category)
    if not paths:
        raise DatasetMissingError(f"eth80: no images of objects {list(objects)} under {base}")
    return Eth80Split(paths, object_ids, categories)


def eth80_rows(root: Path, objects: Sequence[int] = TRAIN_OBJECTS) -> Iterator[dict]:
    """Training manifest rows for ETH-80 ``objects`` (default 1-6, never the evaluated 7-10).

    The label is the object (``cup3``: instance-level retrieval fine-tuning); the only
    caption is category level (``a photo of a cup``), as ETH-80 has nothing finer.
    """
    data = load_eth80(root, objects)
    for path, obj, category in zip(data.paths, data.objects, data.categories):
        yield {"path": str(path), "label": obj, "captions": [f"a photo of a {category}"]}
