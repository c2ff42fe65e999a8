"""Is one image an edit of another? A pixel check made for near-duplicates, beside the embedding.

An image embedding puts "the same photo" and "the same kind of thing" close together: with the
starter model, ETH-80's other views of one object and Caltech-101's photos of one class score as
high as a photo and its crop. A near-duplicate, though, is the same pixels seen through an edit:
resized, re-encoded, recoloured, flipped, cropped, rotated a little, framed by a border.
:func:`same_photo_score` tests exactly that, in two steps:

1. *Placement* (coarse): a greyscale thumbnail of one image (:data:`SIDE` pixels) is placed
   inside the other's at several scales, mirrored or not, both ways round (either may be the
   crop), by normalised cross-correlation (NCC): brightness and contrast changes do not matter,
   and the scales cover crops down to :data:`SMALLEST_CROP` of the side and borders the other
   way. Pairs whose best placement stays under :data:`PLACEMENT_GATE` are not the same photo.
2. *Detail* (fine): at that placement, refined at :data:`FINE_SIDE` pixels over small shifts,
   scales and rotations, the NCC of band-passed images (a difference of Gaussians: edges and
   texture, no flat shading). Another view of an object, or another photo of one scene, matches
   the coarse layout but not the detail; an edit keeps it.
3. *Every region* (local): at the detail's best placement, the band-pass NCC of each cell of a
   :data:`GRID` x :data:`GRID` grid (the four corners left out: a turn uncovers them, a crop or a
   border puts its edge there). An edit keeps the detail everywhere; a neighbouring view of an
   object or a frame of a burst matches most of the picture and breaks somewhere (a moved head,
   a turned handle). A pair whose weakest textured cell is under :data:`CELL_CUT` is not one
   photo.

Measured on Caltech-101 + ETH-80 candidates of the starter (docs/duplicates.md): the placement
alone kept ~9 % of ETH-80's other views at 0.9, the detail 2 %, with 88-100 % of planted crops,
re-encodes, colour changes, flips and borders and 70 % of 3-5 degree turns. The region step was
chosen on one half of the benchmark's classes, where it removed 40 % of the ETH-80 views and half
of the burst frames that passed the detail, and kept every planted crop and border.

Decision: correlation of thumbnails rather than a perceptual hash (a hash of the whole frame
does not survive a crop, a flip or a border) or local features (OpenCV, a 50 MB dependency for
what this check needs). A thumbnail, its Fourier transform and its band-pass are computed once
per image (:class:`Thumbnail`); the scaled templates are made per pair (kept, they would take
~1 MB an image). A placement costs ~2 ms a pair, the detail step ~10-25 ms, run only on pairs
that pass the placement.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

#: the long side of a thumbnail, in pixels
SIDE = 48
#: the smallest crop looked for, as a share of the other image's side
SMALLEST_CROP = 0.4
#: template scales tried, as shares of a thumbnail's size
SCALES = tuple(float(s) for s in np.geomspace(SMALLEST_CROP, 1.0, 12))
#: a template narrower than this (pixels) carries too little to compare
MIN_TEMPLATE = 10
#: the long side of the detail image, in pixels
FINE_SIDE = 112
#: a placement NCC under this is not the same photo (the detail step is skipped)
PLACEMENT_GATE = 0.8
#: the detail NCC at or above which two images count as the same photo (see docs/duplicates.md)
SAME_PHOTO_CUT = 0.9
#: an image placed inside another at under this share of its side is a region of it (:func:`is_region_of`)
REGION_SCALE = 0.95
#: the region step's grid: GRID x GRID cells of the detail, corners left out
GRID = 4
#: a textured cell whose band-pass NCC is under this breaks the pair (see docs/duplicates.md)
CELL_CUT = 0.4
#: refinements of the placement tried in the detail step
_FINE_SCALES = (0.93, 0.965, 1.0, 1.035, 1.07)
_FINE_SHIFT = 4
_EDGE_MARGIN = 0.08
_ANGLES = (-3.0, 3.0, -5.0, 5.0)
_FFT = (2 * SIDE, 2 * SIDE)


def _fit(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    scale = side / max(width, height)
    return image.resize((max(MIN_TEMPLATE, round(width * scale)), max(MIN_TEMPLATE, round(height * scale))),
                        Image.Resampling.BOX)


def _resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


@dataclass(frozen=True)
class _Template:
    height: int
    width: int
    spectrum: np.ndarray
    """conj(FFT) of the zero-mean template, padded to the FFT shape."""
    norm: float


@dataclass(eq=False)
class Thumbnail:
    """One image as the pixel check sees it: greyscale, :data:`SIDE` pixels on its long side for
    the placement, :data:`FINE_SIDE` for the detail, and twice that as the source of the detail
    templates it gives (resampled once to the other image's scale: a template resampled from the
    detail image loses the finest texture and a border's or a turn's pair falls under the cut)."""

    pixels: np.ndarray
    detail: Image.Image
    source: Image.Image

    @classmethod
    def of(cls, image: Image.Image | bytes) -> "Thumbnail":
        """The thumbnail of a decoded image or of encoded image bytes."""
        if isinstance(image, (bytes, bytearray)):
            image = Image.open(io.BytesIO(image))
            image.draft("RGB", (FINE_SIDE * 2, FINE_SIDE * 2))  # JPEG: decode at a fraction of the size
        grey = image.convert("L")
        return cls(np.asarray(_fit(grey, SIDE), dtype=np.float32), _fit(grey, FINE_SIDE), _fit(grey, 2 * FINE_SIDE))

    @cached_property
    def band(self) -> np.ndarray:
        """The detail image's edges and texture (:func:`_band`)."""
        return _band(self.detail)

    @cached_property
    def spectrum(self) -> np.ndarray:
        return np.fft.rfft2(self.pixels, _FFT).astype(np.complex64)

    @cached_property
    def _integrals(self) -> tuple[np.ndarray, np.ndarray]:
        padded = np.pad(self.pixels.astype(np.float64), ((1, 0), (1, 0)))
        return padded.cumsum(0).cumsum(1), (padded**2).cumsum(0).cumsum(1)

    def window_spread(self, height: int, width: int) -> np.ndarray:
        """sqrt of the sum of squared deviations of every ``height`` x ``width`` window (valid placements)."""
        total, squares = self._integrals

        def box(sums: np.ndarray) -> np.ndarray:
            return sums[height:, width:] - sums[:-height, width:] - sums[height:, :-width] + sums[:-height, :-width]

        s = box(total)
        variance = box(squares) - s * s / (height * width)
        return np.sqrt(np.maximum(variance, 0.0))

    def template(self, scale: float, mirrored: bool) -> _Template | None:
        """This thumbnail at ``scale`` (mirrored or not), ready to be correlated; None: too small
        or flat. Not kept: a collection's worth of templates would take ~1 MB an image."""
        height, width = self.pixels.shape
        th, tw = int(height * scale), int(width * scale)
        if min(th, tw) < MIN_TEMPLATE:
            return None
        pixels = _resized(self.pixels, tw, th)
        if mirrored:
            pixels = pixels[:, ::-1]
        centred = pixels - pixels.mean()
        norm = float(np.linalg.norm(centred))
        if norm <= 1e-3:
            return None
        return _Template(th, tw, np.conj(np.fft.rfft2(centred, _FFT)).astype(np.complex64), norm)


@dataclass(frozen=True)
class _Placement:
    score: float
    y: int
    x: int
    height: int
    width: int
    mirrored: bool


def _placed_inside(big: Thumbnail, small: Thumbnail) -> _Placement:
    """The best placement of ``small``, scaled and mirrored, inside ``big`` (by NCC)."""
    height, width = big.pixels.shape
    templates = [(t, mirrored) for scale in SCALES for mirrored in (False, True)
                 if (t := small.template(scale, mirrored)) is not None and t.height <= height and t.width <= width]
    best = _Placement(0.0, 0, 0, height, width, False)
    if not templates:
        return best
    correlations = np.fft.irfft2(big.spectrum[None] * np.stack([t.spectrum for t, _ in templates]), _FFT)
    for (template, mirrored), correlation in zip(templates, correlations):
        valid = correlation[: height - template.height + 1, : width - template.width + 1]
        spread = big.window_spread(template.height, template.width)
        flat = spread < 1e-2 * np.sqrt(template.height * template.width)  # a plain patch matches nothing
        ncc = np.where(flat, 0.0, valid / (np.maximum(spread, 1e-9) * template.norm))
        at = int(ncc.argmax())
        if ncc.flat[at] > best.score:
            y, x = divmod(at, ncc.shape[1])
            best = _Placement(min(float(ncc.flat[at]), 1.0), y, x, template.height, template.width, mirrored)
    return best


def is_region_of(outer: Thumbnail, inner: Thumbnail) -> bool:
    """For two images already found to be one photo: whether ``inner`` is a region of ``outer``
    (it places inside ``outer`` better than the other way round, at under :data:`REGION_SCALE`
    of ``outer``'s side): a crop, or a turned copy cut to its inner part."""
    place = _placed_inside(outer, inner)
    height, width = outer.pixels.shape
    return (place.score >= _placed_inside(inner, outer).score
            and place.height * place.width < REGION_SCALE**2 * height * width)


def alignment_score(a: Thumbnail, b: Thumbnail) -> float:
    """How well one image's thumbnail fits inside the other's (either way round, mirrored or
    not), as an NCC in [-1, 1]: the placement step alone."""
    return max(_placed_inside(a, b).score, _placed_inside(b, a).score)


def _band(image: Image.Image) -> np.ndarray:
    """Edges and texture: a difference of Gaussians."""
    return (np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
            - np.asarray(image.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32))


@dataclass(frozen=True)
class _Detail:
    """The detail step's best match: its NCC, the scale adjustment it was found at, and the two
    band-passed images it compared (``small``'s, zero-mean, and ``big``'s window)."""

    score: float
    adjust: float = 1.0
    template: np.ndarray | None = None
    window: np.ndarray | None = None


def _detail_at(big: Thumbnail, small: Image.Image, place: _Placement,
               adjusts: tuple[float, ...] = _FINE_SCALES) -> _Detail:
    """The best band-pass match of ``small`` around ``place`` in ``big``'s detail image."""
    band = big.band
    ry = big.detail.height / big.pixels.shape[0]
    rx = big.detail.width / big.pixels.shape[1]
    best = _Detail(-1.0)
    for adjust in adjusts:
        tw, th = max(8, round(place.width * rx * adjust)), max(8, round(place.height * ry * adjust))
        if tw > band.shape[1] or th > band.shape[0]:
            continue
        # the inner part only: a border or the edge of a crop puts a step into the band-pass there
        margin = max(2, round(_EDGE_MARGIN * min(tw, th)))
        template = _band(small.resize((tw, th), Image.Resampling.BOX))[margin:-margin, margin:-margin]
        template -= template.mean()
        norm = float(np.linalg.norm(template))
        if norm < 1e-3:
            continue
        cy = round(place.y * ry + place.height * ry * (1 - adjust) / 2)
        cx = round(place.x * rx + place.width * rx * (1 - adjust) / 2)
        y0, y1 = max(0, cy - _FINE_SHIFT), min(band.shape[0] - th, cy + _FINE_SHIFT)
        x0, x1 = max(0, cx - _FINE_SHIFT), min(band.shape[1] - tw, cx + _FINE_SHIFT)
        if y1 < y0 or x1 < x0:
            continue
        inner = band[y0 + margin : y1 + th - margin, x0 + margin : x1 + tw - margin]
        windows = sliding_window_view(inner, template.shape)
        products = np.einsum("ijkl,kl->ij", windows, template)
        means = windows.mean(axis=(2, 3))
        spread = np.sqrt(np.maximum((windows**2).sum(axis=(2, 3)) - template.size * means**2, 1e-9))
        ncc = products / (spread * norm)
        at = np.unravel_index(int(ncc.argmax()), ncc.shape)
        if float(ncc[at]) > best.score:
            best = _Detail(min(float(ncc[at]), 1.0), adjust, template, windows[at])
    return best


def weakest_cell(template: np.ndarray, window: np.ndarray) -> float:
    """The lowest NCC over the textured cells of a :data:`GRID` x :data:`GRID` grid of two
    aligned band-passed images, corners left out (1.0 when no cell is textured)."""
    height, width = template.shape
    corners = {(0, 0), (0, GRID - 1), (GRID - 1, 0), (GRID - 1, GRID - 1)}
    weakest = 1.0
    for i in range(GRID):
        for j in range(GRID):
            if (i, j) in corners:
                continue
            rows = slice(i * height // GRID, (i + 1) * height // GRID)
            columns = slice(j * width // GRID, (j + 1) * width // GRID)
            a, b = template[rows, columns], window[rows, columns]
            a, b = a - a.mean(), b - b.mean()
            norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
            if norm_a < 5e-3 * np.sqrt(a.size) or norm_b < 1e-3:  # flat: no evidence either way
                continue
            weakest = min(weakest, float((a * b).sum()) / (norm_a * norm_b))
    return weakest


def _rotated(image: Image.Image, angle: float) -> Image.Image:
    """``image`` turned by ``angle`` degrees about its centre, at the same scale; the corners the
    turn uncovers are its mean grey (flat: no edges in the band-pass but their own border)."""
    grey = int(np.asarray(image).mean())
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=grey)


def same_photo_score(a: Thumbnail, b: Thumbnail, *, cut: float = SAME_PHOTO_CUT) -> float:
    """How surely ``a`` and ``b`` are one photo, edited, in [-1, 1] (at or above
    :data:`SAME_PHOTO_CUT`: the same photo): the detail NCC at their best placement, or, when a
    textured region breaks there (:func:`weakest_cell` under :data:`CELL_CUT`), that region's
    NCC. Pairs whose placement is under :data:`PLACEMENT_GATE` get the placement's score. Small
    turns (3 and 5 degrees either way) are tried only while the score is under ``cut``."""
    forward, backward = _placed_inside(a, b), _placed_inside(b, a)
    big, small, place = (a, b, forward) if forward.score >= backward.score else (b, a, backward)
    if place.score < PLACEMENT_GATE:
        return place.score
    detail = small.source.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if place.mirrored else small.source
    best = _detail_at(big, detail, place)
    for angle in _ANGLES:  # turned a little: near the scale found unturned
        if best.score >= cut:
            break
        adjusts = (best.adjust / 1.035, best.adjust, best.adjust * 1.035)
        best = max(best, _detail_at(big, _rotated(detail, angle), place, adjusts), key=lambda found: found.score)
    if best.template is None or best.window is None or best.score < cut:
        return best.score
    weakest = weakest_cell(best.template, best.window)
    return weakest if weakest < CELL_CUT else best.score


__all__ = ["CELL_CUT", "FINE_SIDE", "GRID", "PLACEMENT_GATE", "REGION_SCALE", "SAME_PHOTO_CUT", "SIDE", "SMALLEST_CROP",
           "Thumbnail", "alignment_score", "is_region_of", "same_photo_score", "weakest_cell"]
