"""A corpus of awkward image files, generated on the spot (no fixtures on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imagegen import image_bytes, make_shape_image


def jpeg_bytes(image: Image.Image, **save_args) -> bytes:
    return image_bytes(image, "JPEG", **save_args)


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """JPEG whose pixels are stored rotated; EXIF orientation 6 says 'rotate 90° CW to view'."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise by 90°
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(stored, quality=100, subsampling=0, exif=exif.tobytes())


def write_bad_corpus(root: Path) -> dict[str, str]:
    """Write undecodable files; returns ``{filename: expected ImageDecodeError.reason}``."""
    root.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(make_shape_image("red", "circle", size=128))
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "page.jpg").write_text("<!doctype html><html><body>404 Not Found</body></html>")
    (root / "folder.jpg").mkdir()
    return {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty",
        "text.jpg": "not_an_image",
        "page.jpg": "not_an_image",
        "folder.jpg": "is_directory",
    }


def write_awkward_but_valid(root: Path) -> dict[str, bytes | None]:
    """Write decodable files in unusual modes; returns their names."""
    root.mkdir(parents=True, exist_ok=True)
    base = make_shape_image("blue", "square", size=96)
    base.convert("CMYK").save(root / "cmyk.jpg", "JPEG", quality=95)
    grad = (np.linspace(0, 65535, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(grad).save(root / "gray16.png")
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    pal.save(root / "palette_transparent.png", transparency=0)
    frames = [make_shape_image(c, "circle", size=64) for c in ("red", "green", "yellow")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(root / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    rgba.save(root / "transparent.png")
    (root / "rotated.jpg").write_bytes(exif_rotated_jpeg(make_shape_image("green", "triangle", size=96)))
    return {p.name: None for p in root.iterdir()}
