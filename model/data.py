"""Training data: samples from class-per-folder trees or manifests, splits, a robust dataset.

A :class:`Sample` is an image path with an optional class label and 0..n captions.
Sources:

* a directory: every image below ``ROOT/<class>/...`` is a sample of class ``<class>``
  (the first folder level names the class; images directly in ROOT have no label);
* a ``.csv`` manifest with a header naming ``path`` and optionally ``label`` and
  ``captions``; a ``.jsonl`` manifest with one object per line with the same keys.
  ``captions`` is a JSON list or a ``|``-separated string. Relative paths are relative to
  the manifest's folder.

Images are decoded by :func:`clip_ingest.connectors.decode.decode_image`; an image that
cannot be decoded is skipped with a warning and counted (``Batch.skipped``), never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from clip_ingest.connectors.decode import DEFAULT_MAX_MEGAPIXELS, ImageDecodeError, decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".heic", ".avif"}
)


class DataError(ValueError):
    """A data source is missing or malformed (the message names the file and line)."""


CAPTIONS_ADVICE = ("give them in a manifest ('captions' column), mine them (`clip-model mine-captions`), or make "
                   "them from the class names: --set \"templates=['a photo of a {label}.']\"")
"""What to do when a stage needs captions the data lacks."""


@dataclass(frozen=True)
class Sample:
    """One training image: its path, class label (or ``None``) and captions."""

    path: str
    label: str | None = None
    captions: tuple[str, ...] = ()


def scan_class_folders(root: str | os.PathLike) -> list[Sample]:
    """All images below ``root``, labelled by their first folder level, in sorted order."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image folder not found: {root}")
    samples = []
    for path in sorted(base.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            parts = path.relative_to(base).parts
            samples.append(Sample(str(path), parts[0] if len(parts) > 1 else None))
    return samples


def parse_captions(value: Any, where: str) -> tuple[str, ...]:
    """Captions from a JSON list, a JSON-list string or a ``|``-separated string."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: captions look like JSON but do not parse: {exc}") from exc
        else:
            value = text.split("|")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataError(f"{where}: captions must be a list of strings")
    return tuple(c.strip() for c in value if c.strip())


def _sample_from_row(row: dict[str, Any], base: Path, where: str) -> Sample:
    path = row.get("path")
    if not path or not isinstance(path, str):
        raise DataError(f"{where}: missing 'path'")
    label = row.get("label")
    return Sample(
        str(base / path),
        None if label in (None, "") else str(label),
        parse_captions(row.get("captions"), where),
    )


def read_manifest(manifest: str | os.PathLike) -> list[Sample]:
    """Samples of a ``.csv`` or ``.jsonl`` manifest (see the module doc for the columns)."""
    path = Path(manifest)
    if not path.is_file():
        raise DataError(f"manifest not found: {manifest}")
    base = path.parent
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise DataError(f"{path}: CSV manifest needs a header with a 'path' column")
            return [_sample_from_row(row, base, f"{path}:{i + 2}") for i, row in enumerate(reader)]
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            samples = []
            for i, line in enumerate(fh):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{i + 1}: not valid JSON: {exc}") from exc
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{i + 1}: expected a JSON object")
                    samples.append(_sample_from_row(row, base, f"{path}:{i + 1}"))
            return samples
    raise DataError(f"{path}: manifest must be .csv or .jsonl")


def load_samples(source: str | os.PathLike) -> list[Sample]:
    """Samples of a class-per-folder directory or a manifest file."""
    return scan_class_folders(source) if Path(source).is_dir() else read_manifest(source)


def load_sources(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Sample]:
    """Samples of one source (:func:`load_samples`) or of several, in the order given: a recipe
    can train on two manifests without a shell step joining them."""
    if isinstance(sources, (str, os.PathLike)):
        return load_samples(sources)
    return [s for source in sources for s in load_samples(source)]


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write ``rows`` as JSONL, whole or not at all; returns how many.

    The rows go to a temporary file renamed into place at the end, so an interrupted run leaves
    either the previous file or none, never a truncated manifest that a re-run would trust.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_manifest(samples: Iterable[Sample], path: str | os.PathLike) -> Path:
    """Write ``samples`` as a JSONL manifest (absolute paths) that :func:`read_manifest` reads."""
    write_jsonl(
        ({"path": str(Path(s.path).resolve()), "label": s.label, "captions": list(s.captions)} for s in samples), path
    )
    return Path(path)


def split_samples(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministic train/val split by a seeded hash of each path.

    A sample's side depends only on its path and ``seed``, not on the order or on
    which other samples exist, so adding images never moves old ones across the split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("val_fraction must be in [0, 1)")
    train, val = [], []
    for s in samples:
        digest = hashlib.sha256(f"{seed}:{s.path}".encode()).digest()
        (val if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else train).append(s)
    return train, val


def class_index(samples: Iterable[Sample]) -> dict[str, int]:
    """Sorted class names -> ids; raises if a sample has no label (class training needs one)."""
    labels = set()
    for s in samples:
        if s.label is None:
            raise DataError(f"{s.path}: has no class label (put it in a class folder or give a label)")
        labels.add(s.label)
    return {label: i for i, label in enumerate(sorted(labels))}


@dataclass
class Batch:
    """A collated batch: pixels ``(B, 3, S, S)`` (``(B, 2, 3, S, S)`` with two views of each
    image), the dataset indices of its images and the
    number of images in it that could not be decoded and were dropped."""

    pixels: torch.Tensor
    indices: torch.Tensor
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.pixels.to(device, non_blocking=True), self.indices.to(device), self.skipped)


class ImageDataset(Dataset):
    """Decodes ``samples[i]`` and applies ``transform``; ``None`` for an undecodable image.

    With ``views=2`` the image is decoded once and ``transform`` (random augmentation) applied
    twice: the item is ``(2, 3, S, S)``, two views for an image-image loss.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Any], torch.Tensor],
        *,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        draft_size: int | None = None,
        views: int = 1,
    ) -> None:
        if views not in (1, 2):
            raise ValueError("views must be 1 or 2")
        self.samples = list(samples)
        self.transform = transform
        self.views = views
        self.max_megapixels = max_megapixels
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            image = decode_image(
                self.samples[index].path, max_megapixels=self.max_megapixels, draft_size=self.draft_size
            ).image
        except ImageDecodeError as exc:
            log.warning("skipping image: %s", exc)
            return None
        if self.views == 2:
            return torch.stack([self.transform(image), self.transform(image)]), index
        return self.transform(image), index


def collate_images(items: Sequence[tuple[torch.Tensor, int] | None]) -> Batch:
    """Stack the decodable items and count the others (a batch of only bad images has 0 rows)."""
    good = [item for item in items if item is not None]
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped)
    pixels = torch.stack([p for p, _ in good])
    return Batch(pixels, torch.tensor([i for _, i in good], dtype=torch.long), skipped)
