"""Generated test images, the one module every other generator builds on: coloured shapes whose
payload (colour, shape) is known (:func:`make_shape_image`, :func:`write_shape_folder`),
distinct photo-like pictures (:func:`texture`, :func:`photo`), and an image as a file's bytes
(:func:`image_bytes`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square", "triangle")


def make_shape_image(colour: str, shape: str, size: int = 64, variant: int = 0) -> Image.Image:
    """A ``size`` x ``size`` RGB image of one filled shape on a light background.

    ``variant`` shifts the shape a little so that images with the same colour and
    shape still have different bytes (distinct content hashes).
    """
    image = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    off = variant % 7
    box = (size * 0.2 + off, size * 0.2, size * 0.8 + off, size * 0.8)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])], fill=fill)
    return image


def write_shape_folder(root: Path, n: int = 12, fmt: str = "PNG", sidecars: bool = True) -> Path:
    """Write ``n`` distinct shape images under ``root/<shape>/`` with ``IMAGE.json`` sidecars."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[i % len(SHAPES)]
        folder = root / shape
        folder.mkdir(exist_ok=True)
        ext = "png" if fmt == "PNG" else "jpg"
        path = folder / f"{colour}_{i:04d}.{ext}"
        make_shape_image(colour, shape, variant=i).save(path, fmt)
        if sidecars:
            Path(f"{path}.json").write_text(json.dumps({"colour": colour, "shape": shape, "index": i}))
    return root


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


def image_bytes(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    """``image`` encoded as a ``fmt`` file (Pillow's ``save`` options in ``save_args``)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()
