"""Miniature benchmark folders in the layouts of the real eth80/, caltech101/, flickr8k/ and cifar10/ (generated shapes)."""

from __future__ import annotations

import csv
from pathlib import Path

from imagegen import COLOURS, SHAPES, make_shape_image


def write_eval_data(root: Path, views: int = 3) -> Path:
    """Write ``root/{eth80,caltech101,flickr8k,cifar10}``; objects are colours, categories are shapes."""
    colours = list(COLOURS)
    for shape in SHAPES[:2]:
        for n in (7, 8):
            folder = root / "eth80" / shape / f"{shape}{n}"
            folder.mkdir(parents=True)
            for v in range(views):
                make_shape_image(colours[n - 7], shape, variant=v).save(folder / f"{shape}{n}-0-{v * 45}.png")
    caltech = root / "caltech101"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for shape in SHAPES:
        (caltech / f"{shape}_shape").mkdir(parents=True)
        for i in range(4):
            rel = f"{shape}_shape/image_{i:04d}.jpg"
            make_shape_image(colours[i % 4], shape, variant=i).save(caltech / rel)
            lines["train" if i < 3 else "test"].append(rel)
    for split, rels in lines.items():
        (caltech / f"{split}.txt").write_text("\n".join(rels) + "\n")
    flickr = root / "flickr8k"
    (flickr / "images").mkdir(parents=True)
    with (flickr / "captions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, (colour, shape) in enumerate(zip(colours, SHAPES + SHAPES[:1])):
            name = f"{i}.jpg"
            make_shape_image(colour, shape, variant=i).save(flickr / "images" / name)
            writer.writerow([name, f"a {colour} {shape}, on a light background"])
            writer.writerow([name, f"a {shape} coloured {colour}"])
    for shape in SHAPES:
        folder = root / "cifar10" / "test" / shape
        folder.mkdir(parents=True)
        for i in range(2):
            make_shape_image(colours[i], shape, variant=i).resize((32, 32)).save(folder / f"{i}.jpg")
    return root
