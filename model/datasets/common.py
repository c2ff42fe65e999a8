"""What the data set modules share: where the data lives, how a missing data set is reported
and how a quick run subsamples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

DATA_ENV = "CLIP_INGEST_DATA"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetMissingError(FileNotFoundError):
    """A benchmark's dataset folder or index file does not exist."""


def resolve_data_root(explicit: str | os.PathLike | None) -> Path:
    """``explicit``, else ``$CLIP_INGEST_DATA``, made absolute; raises :class:`DatasetMissingError` if
    neither names a folder. Absolute, because manifests written from it are read relative to the
    manifest's own folder: a relative ``../shared/data`` would point somewhere else there."""
    root = explicit or os.environ.get(DATA_ENV)
    if not root:
        raise DatasetMissingError(f"no data root: pass --data-root or set {DATA_ENV} (e.g. /work/shared/data)")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DatasetMissingError(f"data root {path} is not a folder")
    return path


def require(path: Path, dataset: str) -> Path:
    """``path``, or :class:`DatasetMissingError` naming ``dataset`` when it does not exist."""
    if not path.exists():
        raise DatasetMissingError(f"{dataset}: {path} not found (see the data root's README.md for the layout)")
    return path


def evenly(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced (all of them when ``limit`` is None)."""
    if limit is None or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
