"""What a similarity score means for one model: raw cosine -> probability of a near-duplicate.

Raw cosine scores are not comparable across models: for the random-weight tiny model two
unrelated images score 0.95 on average; for the starter model an image and its JPEG re-encode
score 0.996 while two unrelated photos score 0.32. A threshold tuned for one model is wrong for
the next, and retrieval fine-tuning changes the scale again.

:func:`calibrate` measures the scale of one model on images it is given: each is edited the way
near-duplicates arise (a crop, a strong JPEG re-encode, a brightness change, a downscale), and
the similarities of image and edit (matches) are set against those of two different images
(non-matches). A logistic fit of match against cosine (Platt scaling, equal weight to both
classes) gives a monotone mapping to a *relevance* in [0, 1] and back: ``--min-relevance 0.9``
then means "pairs that are near-duplicates 9 times in 10 at equal prior" whatever the model.
The fit is deterministic (seeded edits, fixed image order) and cached per ``model_id`` under
``$CLIP_INGEST_CACHE/calibration`` (default ``~/.cache/clip-ingest``), so a model is
calibrated once, when first used.

Text queries need a mapping of their own, and a query-dependent one: how high a caption's best
matches score depends on the caption (a generic "a photo" scores everything alike; a precise one
scores its few matches far above the rest). :class:`TextCalibration` therefore standardises a raw
cosine against the query's own scores over a reference sample of the collection (its mean and
spread: a z-score, computed at query time from stored vectors, no model call), then maps that
through a monotone (isotonic) fit of "this image matches the caption" measured on labelled
caption-image pairs at their natural share of matches (:func:`fit_text_calibration`;
``clip-model calibrate-text`` runs it on a manifest and stores it with the model). A relevance is
thus a precision at the fit's base rate, not at equal prior: a class-balanced logistic (version
1) promised 0.9 where 0.40 of the starter's hits on Caltech-101 matched. Where this departs from the "Cosine Adapter" (relevance filtering for
embedding-based retrieval), which learns the query-dependent mapping from the query embedding: the
query dependence here comes from the query's score distribution, which needs no training data
beyond the labelled pairs and transfers to any collection.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from .decode import ImageInput, decode_image
from .embedder import Embedder
from .ingest.reader import read_stored

CALIBRATION_VERSION = 1
MIN_IMAGES = 8


@dataclass(frozen=True)
class Calibration:
    """``relevance(s) = 1 / (1 + exp(-(slope * s + intercept)))``, fitted for one model."""

    model_id: str
    slope: float
    intercept: float
    images: int
    matches: int
    non_matches: int
    version: int = CALIBRATION_VERSION

    def relevance(self, score: float | np.ndarray) -> float | np.ndarray:
        """Raw cosine -> probability that the pair is a near-duplicate (at equal prior)."""
        z = self.slope * np.asarray(score, dtype=np.float64) + self.intercept
        value = 1.0 / (1.0 + np.exp(-z))
        return float(value) if np.ndim(value) == 0 else value

    def threshold(self, relevance: float) -> float:
        """The raw cosine at which :meth:`relevance` equals ``relevance`` (the inverse mapping)."""
        if not 0.0 < relevance < 1.0:
            raise ValueError("a relevance is strictly between 0 and 1")
        return (math.log(relevance / (1.0 - relevance)) - self.intercept) / self.slope


def edits(image: Image.Image) -> list[Image.Image]:
    """The near-duplicates of ``image`` the calibration expects a finder to catch."""
    width, height = image.size
    crop = image.crop((round(width * 0.06), round(height * 0.06), round(width * 0.94), round(height * 0.94)))
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=40)
    return [
        crop.resize((width, height), Image.Resampling.BICUBIC),
        Image.open(io.BytesIO(encoded.getvalue())).convert("RGB"),
        ImageEnhance.Brightness(image).enhance(1.15),
        image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.BICUBIC),
    ]


def _fit_logistic(scores: np.ndarray, labels: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Class-balanced logistic regression of ``labels`` on ``scores`` by Newton's method.

    Scores are standardised for the fit (cosines of one model often sit within 0.05 of each
    other) and the tiny ridge keeps a perfectly separable set finite.
    """
    centre, spread = float(scores.mean()), float(scores.std()) or 1.0
    x = np.stack([(scores - centre) / spread, np.ones_like(scores)], axis=1)
    weights = np.where(labels == 1, 0.5 / labels.sum(), 0.5 / (len(labels) - labels.sum()))
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        gradient = x.T @ (weights * (p - labels)) + 1e-3 * theta
        hessian = (x * (weights * p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    slope = theta[0] / spread
    return float(slope), float(theta[1] - slope * centre)


def calibrate(embedder: Embedder, images: Sequence[ImageInput]) -> Calibration:
    """Fit the score scale of ``embedder`` on ``images`` (at least ``MIN_IMAGES`` distinct ones)."""
    decoded = [decode_image(item).image for item in images]
    if len(decoded) < MIN_IMAGES:
        raise ValueError(f"calibration needs at least {MIN_IMAGES} images, got {len(decoded)}")
    originals = embedder.embed_images(decoded)
    matches = [embedder.embed_images(edits(image)) @ vector for image, vector in zip(decoded, originals)]
    similarity = originals @ originals.T
    upper = np.triu_indices(len(decoded), 1)
    positives, negatives = np.concatenate(matches), similarity[upper]
    scores = np.concatenate([positives, negatives]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    slope, intercept = _fit_logistic(scores, labels)
    if slope <= 0:
        raise ValueError("edited copies are not more similar than different images for this model: it cannot be calibrated")
    return Calibration(embedder.model_id, slope, intercept, len(decoded), len(positives), len(negatives))


def pick_diverse(vectors: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` distinct rows chosen by farthest-point sampling (deterministic: starts at
    row 0); ``n = len(vectors)`` orders every row, farthest first.

    Calibrating on a collection's own images would count its near-duplicates as non-matches;
    picking images far from each other leaves at most one of each group of copies.
    """
    if len(vectors) == 0:
        return []
    chosen = [0]
    closest = vectors @ vectors[0]
    closest[0] = np.inf
    while len(chosen) < min(n, len(vectors)):
        index = int(np.argmin(closest))
        chosen.append(index)
        closest = np.maximum(closest, vectors @ vectors[index])
        closest[chosen] = np.inf
    return chosen


def cache_dir() -> Path:
    return Path(os.environ.get("CLIP_INGEST_CACHE") or Path.home() / ".cache" / "clip-ingest") / "calibration"


def _cache_file(model_id: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_.@+" else "_" for ch in model_id)
    return cache_dir() / f"{safe}.json"


def load_calibration(model_id: str) -> Calibration | None:
    """The cached calibration of ``model_id`` (None: not calibrated yet, or an older format)."""
    try:
        data = json.loads(_cache_file(model_id).read_text(encoding="utf-8"))
        found = Calibration(**data)
    except (OSError, ValueError, TypeError):
        return None
    return found if found.model_id == model_id and found.version == CALIBRATION_VERSION else None


def calibration_for(embedder: Embedder, images: Sequence[ImageInput]) -> Calibration:
    """The cached calibration of the embedder's model, else one fitted on ``images`` and cached."""
    found = load_calibration(embedder.model_id)
    if found is not None:
        return found
    fitted = calibrate(embedder, images)
    _write_json(_cache_file(embedder.model_id), asdict(fitted))
    return fitted


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


CALIBRATION_IMAGES = 64
CANDIDATES = 1024
"""Stored images the calibration set of a collection is picked from."""


def first_points(store: Any, n: int) -> list[Any]:
    """The stored points (vectors included) of the first ``n`` ids in sorted order: ids are content
    hashes, so these are an unbiased sample of the collection, the same on every call."""
    ids = sorted(p.id for p in store.scroll(fields=[]))[:n]
    return sorted(store.retrieve(ids, with_vectors=True), key=lambda p: p.id)


def collection_calibration(embedder: Embedder, store: Any) -> Calibration:
    """The calibration of the embedder's model: cached, or measured now on up to
    :data:`CALIBRATION_IMAGES` of the collection's own images, read from their ``path`` (local
    files and ``s3://`` objects alike). They are picked far apart in vector space, and at most
    half of the stored ones, so that copies already in the collection do not count as
    non-matches; an image that cannot be read any more is passed over for the next farthest.
    ``store`` is any clip-ingest store."""
    found = load_calibration(embedder.model_id)
    if found is not None:
        return found
    stored = [p for p in first_points(store, CANDIDATES) if isinstance(p.payload.get("path"), str)]
    wanted = max(MIN_IMAGES, min(CALIBRATION_IMAGES, len(stored) // 2))
    images: list[bytes] = []
    for index in pick_diverse(np.array([p.vector for p in stored]), len(stored)):
        data = read_stored(stored[index].payload["path"])
        if data is not None:
            images.append(data)
            if len(images) == wanted:
                break
    if len(images) < MIN_IMAGES:
        raise ValueError(f"calibrating the model needs {MIN_IMAGES} readable images of the collection; "
                         f"found {len(images)}: give a raw cosine threshold instead")
    return calibration_for(embedder, images)


def cosine_for(calibration: Calibration, min_relevance: float) -> float:
    """The raw cosine at which ``calibration`` reaches ``min_relevance``; ``ValueError`` when no
    pair can (it would take a cosine above 1)."""
    raw = calibration.threshold(min_relevance)
    if raw > 1.0:
        raise ValueError(f"no pair reaches relevance {min_relevance:g} with this model (it would take a "
                         f"cosine of {raw:.4f} > 1): give a lower --min-relevance")
    return raw



TEXT_REFERENCE = 1024
"""Stored vectors a text query's score distribution is measured on (:func:`first_points`)."""


TEXT_CALIBRATION_VERSION = 2
"""Version 2: an isotonic map fitted at the natural share of matches (version 1, a class-balanced
logistic, promised 0.9 where 0.40 of Caltech-101's hits matched)."""
#: bins of the fit's standardised scores, finer where the few matches are (the top)
_TEXT_BINS = 1.0 - np.geomspace(1.0, 1e-5, 64)
#: a cut above every cosine: no hit reaches the relevance asked for
UNREACHABLE = 2.0


@dataclass(frozen=True)
class TextCalibration:
    """``relevance(s)``: the share of images that matched a query at that standardised score
    ``z = (s - mean_q) / std_q`` (the query's mean and spread of scores over a reference sample of
    the collection), in the labelled pairs it was fitted on, where ``base_rate`` of all pairs
    matched. A monotone, piecewise-linear map through ``knots_z`` -> ``knots_p`` (an isotonic fit),
    so that the hits kept at a cut ``r`` matched at least ``r`` of the time there."""

    model_id: str
    knots_z: tuple[float, ...]
    knots_p: tuple[float, ...]
    base_rate: float
    queries: int
    matches: int
    non_matches: int
    version: int = TEXT_CALIBRATION_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "knots_z", tuple(float(v) for v in self.knots_z))
        object.__setattr__(self, "knots_p", tuple(float(v) for v in self.knots_p))

    def relevance_of_z(self, z: np.ndarray) -> np.ndarray:
        """The relevance of standardised scores ``z``."""
        return np.interp(np.asarray(z, dtype=np.float64), self.knots_z, self.knots_p)

    def z_for(self, relevance: float) -> float:
        """The least standardised score at which the relevance reaches ``relevance`` (inf: never)."""
        if not 0.0 < relevance < 1.0:
            raise ValueError("a relevance is strictly between 0 and 1")
        if relevance > self.knots_p[-1]:
            return math.inf
        return float(np.interp(relevance, self.knots_p, self.knots_z))

    def cut(self, query: np.ndarray, reference: np.ndarray, relevance: float) -> float:
        """The raw cosine at which ``query`` (a text vector) reaches ``relevance``, given the
        reference vectors of the collection it searches (:data:`UNREACHABLE` when no score does)."""
        z = self.z_for(relevance)
        if math.isinf(z):
            return UNREACHABLE
        scores = reference @ query
        return float(scores.mean() + z * (scores.std() or 1.0))

    def relevance(self, scores: np.ndarray, reference_scores: np.ndarray) -> np.ndarray:
        """Relevance of raw ``scores`` of one query whose scores over the reference are ``reference_scores``."""
        z = (np.asarray(scores, dtype=np.float64) - reference_scores.mean()) / (reference_scores.std() or 1.0)
        return self.relevance_of_z(z)


def standardised(similarity: np.ndarray) -> np.ndarray:
    """Each row (one query's scores over a set of images) as z-scores of that row."""
    spread = similarity.std(axis=1, keepdims=True)
    return (similarity - similarity.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest to ``values`` in weighted least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for value, weight in zip(values, weights):
        blocks.append([float(value), float(weight), 1])
        while len(blocks) > 1 and blocks[-2][0] >= blocks[-1][0]:
            last = blocks.pop()
            merged = blocks[-1]
            total = merged[1] + last[1]
            merged[0] = (merged[0] * merged[1] + last[0] * last[1]) / total if total else merged[0]
            merged[1], merged[2] = total, merged[2] + last[2]
    return np.concatenate([np.full(count, value) for value, _, count in blocks])


def fit_text_calibration(model_id: str, texts: np.ndarray, images: np.ndarray, relevant: np.ndarray) -> TextCalibration:
    """Fit :class:`TextCalibration` on caption vectors ``texts`` (n, d), image vectors ``images``
    (m, d) and the boolean ``relevant`` (n, m): which images match which caption. The images are
    the reference sample of each query, as a collection's are at query time. Every pair counts
    once (no reweighting of the classes): the relevance is a share at the fit's own base rate."""
    if relevant.shape != (len(texts), len(images)) or not relevant.any() or relevant.all():
        raise ValueError("text calibration needs captions with both matching and other images")
    z = standardised(texts @ images.T).ravel().astype(np.float64)
    labels = relevant.ravel().astype(np.float64)
    order = np.argsort(z, kind="stable")
    z, labels = z[order], labels[order]
    edges = np.unique(np.quantile(np.arange(len(z)), _TEXT_BINS).round().astype(int))
    bins = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    centres = np.array([z[a:b].mean() for a, b in bins])
    shares = _isotonic(np.array([labels[a:b].mean() for a, b in bins]), np.array([b - a for a, b in bins], dtype=float))
    if shares[-1] <= shares[0]:
        raise ValueError("matching images do not score above the others for this model: its text scores cannot be calibrated")
    # one knot per level (where the level changes), so that the map can be inverted
    keep = [i for i in range(len(shares)) if i == 0 or shares[i] > shares[i - 1]]
    knots_z = [float(centres[i]) for i in keep] + [float(z[-1])]
    knots_p = [float(shares[i]) for i in keep] + [float(shares[-1]) + 1e-9]
    return TextCalibration(model_id, tuple(knots_z), tuple(knots_p), float(labels.mean()), len(texts),
                           int(relevant.sum()), int((~relevant).sum()))


def _text_cache_file(model_id: str) -> Path:
    return _cache_file(model_id).with_suffix(".text.json")


TEXT_CALIBRATION_FIELD = "text_calibration"
"""Where a model folder's ``clip_ingest.json`` carries its text calibration."""


def save_text_calibration(calibration: TextCalibration) -> Path:
    """Cache ``calibration`` under its model id; returns the file."""
    return _write_json(_text_cache_file(calibration.model_id), asdict(calibration))


def load_text_calibration(embedder: Embedder) -> TextCalibration | None:
    """The embedder's text calibration: shipped in its model folder's metadata, else cached
    (``clip-model calibrate-text`` writes both); None: not calibrated for text."""
    metadata = getattr(embedder, "metadata", None) or {}
    candidates = [metadata.get(TEXT_CALIBRATION_FIELD)]
    try:
        candidates.append(json.loads(_text_cache_file(embedder.model_id).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    for data in candidates:
        try:
            found = TextCalibration(**data) if isinstance(data, dict) else None
        except TypeError:
            continue
        if found is not None and found.model_id == embedder.model_id and found.version == TEXT_CALIBRATION_VERSION:
            return found
    return None


def reference_vectors(store: Any) -> np.ndarray:
    """Up to :data:`TEXT_REFERENCE` stored vectors of the collection (:func:`first_points`)."""
    found = [p.vector for p in first_points(store, TEXT_REFERENCE) if p.vector is not None]
    if len(found) < MIN_IMAGES:
        raise ValueError(f"a calibrated text search needs {MIN_IMAGES} stored images; the collection has {len(found)}")
    return np.asarray(found, dtype=np.float32)


__all__ = ["Calibration", "TextCalibration", "calibrate", "calibration_for", "collection_calibration", "cosine_for", "edits",
           "first_points", "fit_text_calibration", "load_calibration", "load_text_calibration", "pick_diverse", "reference_vectors",
           "save_text_calibration", "standardised"]
