"""The pixel check of near-duplicates: edits of one picture pass it, other pictures and other
views of one scene do not; in the duplicates tier it drops look-alike pairs the embedding kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from imagegen import image_bytes, photo

from clip_ingest.connectors.backends.base import Point
from clip_ingest.connectors.search.duplicates import SamePhotoCheck
from clip_ingest.connectors.search.same_photo import (
    CELL_CUT,
    FINE_SIDE,
    SAME_PHOTO_CUT,
    Thumbnail,
    alignment_score,
    same_photo_score,
    weakest_cell,
)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(image, "JPEG", quality=quality))).convert("RGB")


def _turned(image: Image.Image, degrees: float) -> Image.Image:
    turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC)
    margin = image.width * 6 // 100
    return turned.crop((margin, margin, image.width - margin, image.height - margin))


def _bordered(image: Image.Image) -> Image.Image:
    frame = image.width // 10
    canvas = Image.new("RGB", (image.width + 2 * frame, image.height + 3 * frame), (240, 240, 240))
    canvas.paste(image, (frame, 2 * frame))
    return canvas


EDITS = {
    "crop": lambda im: im.crop((20, 10, 230, 220)),
    "resize": lambda im: im.resize((128, 128)),
    "reencode": lambda im: _jpeg(im, 25),
    "colour": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.5)).enhance(0.85),
    "flip": ImageOps.mirror,
    "border": _bordered,
    "turn": lambda im: _turned(im, 5),
}


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return photo(7, size=256)


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_an_edit_of_a_picture_is_the_same_photo(original: Image.Image, kind: str) -> None:
    edited = EDITS[kind](original)
    assert same_photo_score(Thumbnail.of(original), Thumbnail.of(edited)) >= SAME_PHOTO_CUT
    assert same_photo_score(Thumbnail.of(edited), Thumbnail.of(original)) >= SAME_PHOTO_CUT  # either way round


def test_other_pictures_are_not_the_same_photo(original: Image.Image) -> None:
    first = Thumbnail.of(original)
    scores = [same_photo_score(first, Thumbnail.of(photo(seed, size=256))) for seed in range(20, 40)]
    assert max(scores) < SAME_PHOTO_CUT, scores


def test_another_view_of_the_same_scene_is_not_the_same_photo() -> None:
    """The same colour field and shapes, the shapes moved a little (another shot of one scene):
    the layout places well, the detail does not match."""
    rng = np.random.default_rng(3)
    scene = photo(11, size=256)
    moved = scene.copy()
    for _ in range(6):
        box = tuple(int(v) for v in (*rng.integers(0, 180, 2), *rng.integers(30, 70, 2)))
        patch = scene.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        moved.paste(patch, (box[0] + int(rng.integers(4, 9)), box[1] + int(rng.integers(4, 9))))
    a, b = Thumbnail.of(scene), Thumbnail.of(moved)
    assert alignment_score(a, b) > 0.9  # the embedding's kind of look-alike: the layout matches
    assert same_photo_score(a, b) < SAME_PHOTO_CUT


@pytest.mark.parametrize("seed", [12, 13, 14, 15])
def test_a_frame_of_a_burst_is_not_the_same_photo(seed: int) -> None:
    """One region of the picture moved (a head turned between two frames), the rest the same
    pixels: the detail over the whole picture still matches, the region step finds the break."""
    scene = photo(seed, size=256)
    frame = scene.copy()
    frame.paste(scene.crop((72, 72, 136, 136)), (64, 64))  # an inner region, shifted 8 pixels
    a, b = Thumbnail.of(scene), Thumbnail.of(frame)
    assert same_photo_score(a, b) < CELL_CUT < SAME_PHOTO_CUT
    assert same_photo_score(a, Thumbnail.of(EDITS["colour"](scene))) >= SAME_PHOTO_CUT  # an edit of the whole keeps it


def test_the_weakest_cell_skips_corners_and_flat_cells() -> None:
    rng = np.random.default_rng(0)
    template = rng.normal(size=(64, 64)).astype(np.float32)
    window = template.copy()
    assert weakest_cell(template, window) == pytest.approx(1.0)
    window[:16, :16] = rng.normal(size=(16, 16))  # a corner: a turn or a crop's edge, no evidence
    assert weakest_cell(template, window) == pytest.approx(1.0)
    template[16:32, :16] = 0.0  # a flat cell: no evidence either way
    window[16:32, :16] = rng.normal(size=(16, 16))
    assert weakest_cell(template, window) == pytest.approx(1.0)
    window[16:32, 16:32] = rng.normal(size=(16, 16))  # an inner cell that does not match
    assert weakest_cell(template, window) < 0.3


def test_thumbnails_come_from_bytes_and_bad_bytes_are_refused() -> None:
    thumb = Thumbnail.of(image_bytes(photo(3, size=300), "JPEG"))
    assert max(thumb.pixels.shape) == 48 and max(thumb.detail.size) == FINE_SIDE and max(thumb.source.size) == 2 * FINE_SIDE
    with pytest.raises(OSError):
        Thumbnail.of(b"not an image")


def test_the_duplicates_tier_keeps_edits_and_drops_look_alikes_and_unreadable_pairs(original: Image.Image) -> None:
    """Pairs the k-NN pass put together: an edit (kept), another picture (dropped), a pair whose
    file is gone (dropped, counted)."""
    images = {"a": original, "b": EDITS["crop"](original), "c": photo(30, size=256)}
    encoded = {key: image_bytes(image) for key, image in images.items()}
    listed = {key: Point(key, None, {"path": key}) for key in ("a", "b", "c", "gone")}
    neighbours = {"a": {"b": 0.97, "c": 0.96, "gone": 0.99}, "b": {"a": 0.97}, "c": {"a": 0.96}}
    check = SamePhotoCheck(lambda point: encoded.get(point.id))
    assert check(listed, neighbours) == {"a": {"b": 0.97}, "b": {"a": 0.97}}
    assert check.unreadable == 1


def test_a_region_shared_by_two_photos_does_not_join_them() -> None:
    """A crop of one region passes the check with every photo that shows that region (one face
    pasted onto two backgrounds); the two photos are not one photo with each other, so they do not
    share a group. Edits of the leader itself (a crop, a turned copy) stay with it unchecked."""
    first = photo(1, size=256)
    region = first.crop((64, 64, 192, 192))
    second = photo(2, size=256)
    second.paste(region, (64, 64))
    images = {"region": region, "first": first, "second": second, "crop": EDITS["crop"](first),
              "turned": _turned(first, 5)}
    encoded = {}
    for key, image in images.items():
        out = io.BytesIO()
        image.save(out, "PNG")
        encoded[key] = out.getvalue()
    listed = {key: Point(key, None, {"path": key}) for key in images}
    check = SamePhotoCheck(lambda point: encoded.get(point.id))
    star = {"region": {"first": 0.9, "second": 0.9}, "first": {"region": 0.9}, "second": {"region": 0.9}}
    assert check(listed, star) == {"region": {"first": 0.9}, "first": {"region": 0.9}}
    edits = {"first": {"crop": 0.95, "turned": 0.9}, "crop": {"first": 0.95}, "turned": {"first": 0.9}}
    assert check(listed, edits) == edits
