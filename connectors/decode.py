"""Robust image decoding shared by embedding and ingestion.

Real photo folders contain CMYK JPEGs, 16-bit PNGs, palette images with
transparency, animated GIFs, phone pictures that are only upright after their
EXIF orientation is applied, truncated downloads, HTML pages saved as ``.jpg``
and the occasional decompression bomb. Everything that reads pixels goes through
:func:`decode_image`, which either returns an upright 8-bit RGB image or raises
:class:`ImageDecodeError` with the path and a reason a person can act on.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # libjpeg-turbo without Pillow's per-image overhead; Pillow decodes everything when it is missing
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency, absent only on exotic platforms
    simplejpeg = None

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image]
"""Anything the embedders and the ingestion pipeline accept as an image."""

DEFAULT_MAX_MEGAPIXELS = 100.0
"""Images with more pixels than this are refused (configurable per call)."""

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


def _register_optional_plugins() -> tuple[str, ...]:
    """Enable HEIC/AVIF decoding when the optional plugins are installed."""
    enabled = []
    try:  # pragma: no cover - depends on optional extra
        from pillow_heif import register_heif_opener

        register_heif_opener()
        enabled.append("heif")
    except ImportError:
        pass
    try:  # pragma: no cover - depends on optional extra
        import pillow_avif  # noqa: F401

        enabled.append("avif")
    except ImportError:
        pass
    return tuple(enabled)


OPTIONAL_FORMATS = _register_optional_plugins()


class ImageDecodeError(Exception):
    """An image could not be decoded.

    Attributes:
        source: the path (or a short description of an in-memory item).
        reason: one of ``missing``, ``is_directory``, ``unreadable``, ``empty``,
            ``not_an_image``, ``truncated``, ``too_large``, ``corrupt``.
        detail: a human-readable explanation.
    """

    def __init__(self, source: str, reason: str, detail: str):
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {reason}: {detail}")


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image plus facts about the original file.

    ``width``/``height`` are the size of the upright original, even when a
    reduced-size JPEG draft was decoded for speed. ``image`` is None only where a decode worker
    process sent back the facts without the pixels it had already turned into model input.
    """

    image: Image.Image | None
    width: int
    height: int
    format: str | None


def describe_source(item: object) -> str:
    """A short label for an image input, used in error messages and logs."""
    if isinstance(item, (str, os.PathLike)):
        return os.fsdecode(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, Image.Image):
        return f"<PIL image {item.mode} {item.size[0]}x{item.size[1]}>"
    name = getattr(item, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(item).__name__}>"


def _open(item: ImageInput, source: str) -> tuple[Image.Image, bytes | None]:
    """The lazily opened image, and its encoded bytes when this call read them (paths, bytes)."""
    data: bytes | None = None
    if isinstance(item, (str, os.PathLike)):
        path = Path(os.fsdecode(item))
        try:
            if path.is_dir():
                raise ImageDecodeError(source, "is_directory", "is a directory, not an image file")
            if path.stat().st_size == 0:
                raise ImageDecodeError(source, "empty", "file is empty (0 bytes)")
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageDecodeError(source, "missing", "file does not exist (deleted or moved?)") from exc
        except PermissionError as exc:
            raise ImageDecodeError(source, "unreadable", "permission denied") from exc
        except OSError as exc:
            raise ImageDecodeError(source, "unreadable", str(exc)) from exc
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ImageDecodeError(source, "empty", "no bytes given")
        data = bytes(item)
    fp: IO[bytes] = io.BytesIO(data) if data is not None else item  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp), data
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(source, "not_an_image", "not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(source, "too_large", f"decompression-bomb guard: {exc}") from exc
    except OSError as exc:
        raise ImageDecodeError(source, "corrupt", str(exc)) from exc


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit/int/float greyscale to 8 bits instead of clipping it to white."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = np.clip(arr, 0.0, 255.0)
    elif image.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


#: EXIF orientation -> the transpose that makes the image upright (as ``ImageOps.exif_transpose``)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _decode_scaled_jpeg(data: bytes, size: int, orientation: int) -> Image.Image | None:
    """A colour JPEG decoded by libjpeg-turbo (simplejpeg) at the smallest DCT scale leaving both sides >= ``size``.

    The same pixels as Pillow's ``draft`` + ``load`` (same library, same scale; tested), with less
    overhead per image: ~1.5x faster decode (``benchmarks/decode.py``). ``None`` for anything it
    will not decode strictly (corrupt, truncated, unusual encodings): Pillow then decodes the file
    or says precisely what is wrong with it.
    """
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=size, min_height=size, strict=True)
    except ValueError:
        return None
    image = Image.fromarray(pixels)
    return image.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else image


def decode_image(
    item: ImageInput,
    *,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Decode one image to an upright RGB :class:`DecodedImage`.

    Args:
        item: a path, raw bytes, a binary file object or a PIL image.
        max_megapixels: refuse images larger than this (``None``: only Pillow's own
            decompression-bomb guard applies).
        draft_size: when set, large JPEGs are decoded at the smallest DCT scale that
            still leaves both sides at least this many pixels (2-2.4x faster); use the
            model's input size.

    Raises:
        ImageDecodeError: for any file that cannot be turned into an image.
    """
    source = describe_source(item)
    image, data = (item, None) if isinstance(item, Image.Image) else _open(item, source)
    fmt = image.format
    try:
        width, height = image.size
        if max_megapixels is not None and width * height > max_megapixels * 1e6:
            raise ImageDecodeError(
                source,
                "too_large",
                f"{width}x{height} = {width * height / 1e6:.1f} MP exceeds the cap of {max_megapixels:g} MP",
            )
        orientation = image.getexif().get(0x0112, 1) if fmt else 1
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if draft_size and fmt == "JPEG" and image.mode == "RGB" and data is not None and simplejpeg is not None:
            fast = _decode_scaled_jpeg(data, draft_size, orientation)
            if fast is not None:
                return DecodedImage(fast, width, height, fmt)
        if draft_size and fmt == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
            image.draft(image.mode, (draft_size, draft_size))
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return DecodedImage(to_rgb(image), width, height, fmt)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(source, "too_large", f"decompression-bomb guard: {exc}") from exc
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageDecodeError(source, reason, str(exc)) from exc
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise ImageDecodeError(source, "corrupt", f"{type(exc).__name__}: {exc}") from exc

