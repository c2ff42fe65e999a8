"""Generated test images: coloured shapes whose payload (colour, shape) is known."""

from __future__ import annotations

import json
from pathlib import Path

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
