"""Image decoding: every awkward real-world file either decodes correctly or fails with a clear reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from badfiles import exif_rotated_jpeg, jpeg_bytes, write_awkward_but_valid, write_bad_corpus
from clip_ingest.connectors.decode import ImageDecodeError, decode_image, to_rgb
from imagegen import make_shape_image


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "text.jpg", "page.jpg", "folder.jpg"])
def test_bad_files_raise_one_exception_type_with_path_and_reason(tmp_path, name):
    expected = write_bad_corpus(tmp_path)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / name)
    assert info.value.reason == expected[name]
    assert str(tmp_path / name) in str(info.value)
    assert info.value.detail


def test_missing_file_is_reported_as_missing(tmp_path):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / "nope.jpg")
    assert info.value.reason == "missing"


def test_unreadable_file(tmp_path):
    import os

    path = tmp_path / "secret.jpg"
    path.write_bytes(jpeg_bytes(make_shape_image("red", "square")))
    path.chmod(0)
    as_root = os.geteuid() == 0
    if as_root:  # root ignores permission bits: read as an unprivileged user instead
        os.seteuid(65534)
    try:
        with pytest.raises(ImageDecodeError) as info:
            decode_image(path)
    finally:
        if as_root:
            os.seteuid(0)
    assert info.value.reason == "unreadable"


def test_pixel_cap_refuses_large_images_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, max_megapixels=5)
    assert info.value.reason == "too_large"
    assert "6.0 MP" in info.value.detail
    assert decode_image(path, max_megapixels=7).image.size == (3000, 2000)


def test_decompression_bomb_guard_is_kept(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)  # 900 MP, a few hundred KB on disk
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, max_megapixels=None)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "name", ["cmyk.jpg", "gray16.png", "palette_transparent.png", "animated.gif", "animated.webp", "transparent.png"]
)
def test_awkward_modes_decode_to_rgb(tmp_path, name):
    write_awkward_but_valid(tmp_path)
    decoded = decode_image(tmp_path / name)
    assert decoded.image.mode == "RGB"
    assert decoded.width > 0 and decoded.height > 0


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    write_awkward_but_valid(tmp_path)
    arr = np.asarray(decode_image(tmp_path / "gray16.png").image)[:, :, 0]
    # a 0..65535 ramp must become a 0..255 ramp, not saturate to white after the first 1/256
    assert arr.min() == 0 and arr.max() == 255
    assert 100 < arr.mean() < 155


def test_alpha_is_composited_on_white(tmp_path):
    write_awkward_but_valid(tmp_path)
    arr = np.asarray(decode_image(tmp_path / "transparent.png").image)
    assert (arr == 255).all()


def test_animated_gif_uses_first_frame(tmp_path):
    write_awkward_but_valid(tmp_path)
    arr = np.asarray(decode_image(tmp_path / "animated.gif").image)
    centre = arr[32, 32]
    assert centre[0] > 180 and centre[1] < 80  # red, the first frame's colour


def test_exif_orientation_is_applied():
    upright = make_shape_image("green", "triangle", size=96).resize((96, 64))
    decoded = decode_image(exif_rotated_jpeg(upright))
    assert decoded.image.size == upright.size == (decoded.width, decoded.height)
    diff = np.abs(np.asarray(decoded.image, np.int16) - np.asarray(upright, np.int16))
    assert diff.mean() < 3


def test_inputs_bytes_fileobj_pil_and_path_agree(tmp_path):
    data = jpeg_bytes(make_shape_image("yellow", "circle"))
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    arrays = [
        np.asarray(decode_image(item).image)
        for item in (path, str(path), data, io.BytesIO(data), Image.open(io.BytesIO(data)))
    ]
    for arr in arrays[1:]:
        assert np.array_equal(arr, arrays[0])


def test_jpeg_draft_decodes_large_images_at_reduced_size_but_reports_original_size():
    data = jpeg_bytes(make_shape_image("red", "circle", size=1024))
    decoded = decode_image(data, draft_size=224)
    assert (decoded.width, decoded.height) == (1024, 1024)
    assert 224 <= decoded.image.size[0] < 1024


def test_to_rgb_palette_without_transparency():
    pal = make_shape_image("blue", "square").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert to_rgb(pal).mode == "RGB"


def _photo(size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    smooth = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("draft_size", [32, 100, 224])
def test_fast_jpeg_path_gives_pillows_pixels_in_every_orientation(monkeypatch, orientation, draft_size):
    import clip_ingest.connectors.decode as decode

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg_bytes(_photo(), quality=90, exif=exif.tobytes())
    assert decode.simplejpeg is not None  # a dependency: the fast path is what ingestion uses
    fast = decode_image(data, draft_size=draft_size)
    monkeypatch.setattr(decode, "simplejpeg", None)  # Pillow alone: draft + load + exif_transpose
    slow = decode_image(data, draft_size=draft_size)
    assert (fast.width, fast.height, fast.format) == (slow.width, slow.height, slow.format)
    assert fast.image.mode == slow.image.mode == "RGB"
    assert np.array_equal(np.asarray(fast.image), np.asarray(slow.image))
    assert min(fast.image.size) >= min(draft_size, 200)


def test_fast_jpeg_path_leaves_bad_and_unusual_jpegs_to_pillow(tmp_path):
    good = jpeg_bytes(_photo(), quality=90)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(good[: len(good) // 2], draft_size=64)  # truncated: still an error, with its reason
    assert info.value.reason == "truncated"
    cmyk = io.BytesIO()
    _photo().convert("CMYK").save(cmyk, "JPEG")
    grey = jpeg_bytes(_photo().convert("L"))
    for data in (cmyk.getvalue(), grey):
        decoded = decode_image(data, draft_size=64)
        assert decoded.image.mode == "RGB" and min(decoded.image.size) >= 64
