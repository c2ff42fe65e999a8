"""Test helper: planted near-duplicate groups (distinct generated images, and edited copies of
some of them made the way :func:`~clip_ingest.connectors.calibration.edits` makes them), and the
pair precision / recall of found groups against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clip_ingest.connectors.calibration import edits


def texture(seed: int, size: int = 128) -> Image.Image:
    """A distinct photo-like image: a smooth random colour field with grain."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(low).astype(float) + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def photo(seed: int, size: int = 128) -> Image.Image:
    """A distinct picture with edges in it, as photos have (:func:`texture` with a few shapes drawn
    on it): the pixel check of near-duplicates compares edges and texture, not colour fields."""
    rng = np.random.default_rng(seed + 10_000)
    image = texture(seed, size)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size - 20, 2))
        x1, y1 = x0 + int(rng.integers(12, size // 2)), y0 + int(rng.integers(12, size // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return image


def planted(root: Path, seeds: range, edited: int) -> dict[str, set[str]]:
    """Write one picture per seed (:func:`photo`), and 3 edited copies of the first ``edited``;
    returns {group: paths}."""
    root.mkdir(parents=True, exist_ok=True)
    groups: dict[str, set[str]] = {}
    for n, seed in enumerate(seeds):
        image = photo(seed)
        original = root / f"img{seed:03d}.png"
        image.save(original)
        groups[str(seed)] = {str(original)}
        if n < edited:
            for i, copy in enumerate(edits(image)[:3]):  # crop, JPEG q40, brightness
                path = root / f"img{seed:03d}-edit{i}.png"
                copy.save(path)
                groups[str(seed)].add(str(path))
    return groups


def pair_scores(found: list[set[str]], truth: dict[str, set[str]]) -> tuple[float, float]:
    """(precision, recall) over pairs of images put in one group."""
    def pairs(groups):
        return {tuple(sorted((a, b))) for g in groups for a in g for b in g if a < b}
    got, want = pairs(found), pairs(truth.values())
    return (len(got & want) / len(got) if got else 1.0), len(got & want) / len(want)
