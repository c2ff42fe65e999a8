"""Measure a model's text score scale on captioned images: what ``clip-model calibrate-text`` runs.

The fit itself (:func:`~clip_ingest.connectors.calibration.fit_text_calibration`) lives with the
search code that applies it; this module builds its labelled pairs from a manifest and reports
how the fitted mapping does on held-out pairs. A pair is relevant when caption and image share a
class label (Caltech-style data: "a photo of an accordion." matches every accordion), else only
a caption and its own image match (Flickr-style data).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_ingest.connectors.calibration import (TEXT_CALIBRATION_FIELD, TextCalibration, fit_text_calibration,
                                                save_text_calibration, standardised)
from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.factory import METADATA_FILE

from .data import Sample

EMBED_CHUNK = 64


def labelled_pairs(samples: Sequence[Sample], max_images: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """(the queries, the image paths, relevant[query, image]) for up to ``max_images`` captioned
    samples drawn with ``seed``. Labelled samples give one query per label (a caption of one of
    its images), as a person searches for a kind of thing once, however many images it has:
    queries per image would weigh the largest classes most and raise the share of matches (2.9 %
    instead of 1 % on Caltech-101), which the relevance is a precision at. Unlabelled samples
    give each image's caption, matching its own image only."""
    captioned = [s for s in samples if s.captions]
    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(captioned)), min(max_images, len(captioned))))
    chosen = [captioned[i] for i in picked]
    labels = [s.label for s in chosen]
    if all(label is not None for label in labels):
        kinds = sorted(set(labels))
        captions = [rng.choice(rng.choice([s for s in chosen if s.label == kind]).captions) for kind in kinds]
        relevant = np.array([[kind == label for label in labels] for kind in kinds])
    else:
        captions = [rng.choice(s.captions) for s in chosen]
        relevant = np.eye(len(chosen), dtype=bool)
    return captions, [s.path for s in chosen], relevant


def embed_pairs(embedder: Embedder, captions: Sequence[str], paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    texts = np.concatenate([embedder.embed_texts(list(captions[i:i + EMBED_CHUNK])) for i in range(0, len(captions), EMBED_CHUNK)])
    images = np.concatenate([embedder.embed_images(list(paths[i:i + EMBED_CHUNK])) for i in range(0, len(paths), EMBED_CHUNK)])
    return texts, images


def precision_recall(calibration: TextCalibration, texts: np.ndarray, images: np.ndarray, relevant: np.ndarray,
                     relevance: float) -> dict[str, float]:
    """Over all captions, the images that the calibrated cut at ``relevance`` keeps (the images
    being each query's reference sample): pair precision and recall, and the mean kept per query."""
    kept = standardised(texts @ images.T) >= calibration.z_for(relevance)
    hits = int((kept & relevant).sum())
    return {"relevance": relevance, "precision": hits / kept.sum() if kept.any() else 1.0,
            "recall": hits / relevant.sum(), "kept_per_query": float(kept.sum(axis=1).mean())}


def write_into_model(folder: Path, calibration: TextCalibration) -> Path:
    """Store ``calibration`` in the model folder's metadata, where the embedder finds it."""
    path = folder / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata[TEXT_CALIBRATION_FIELD] = calibration.__dict__
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def calibrate_text(embedder: Embedder, fit_samples: Sequence[Sample], eval_samples: Sequence[Sample] | None,
                   *, max_images: int = 1000, seed: int = 0, relevances: Sequence[float] = (0.5, 0.9),
                   model_folder: Path | None = None) -> dict[str, Any]:
    """Fit the model's text calibration on ``fit_samples``, cache it (and write it into
    ``model_folder``'s metadata), and report precision / recall on ``eval_samples``."""
    captions, paths, relevant = labelled_pairs(fit_samples, max_images, seed)
    texts, images = embed_pairs(embedder, captions, paths)
    calibration = fit_text_calibration(embedder.model_id, texts, images, relevant)
    summary: dict[str, Any] = {"calibration": calibration.__dict__, "cached": str(save_text_calibration(calibration)),
                               "fit": {"images": len(paths), "relevant_pairs": int(relevant.sum())}}
    if model_folder is not None:
        summary["written_into"] = str(write_into_model(model_folder, calibration))
    if eval_samples:
        captions, paths, relevant = labelled_pairs(eval_samples, max_images, seed)
        texts, images = embed_pairs(embedder, captions, paths)
        summary["eval"] = {"images": len(paths), "relevant_pairs": int(relevant.sum()),
                           "at": [precision_recall(calibration, texts, images, relevant, r) for r in relevances]}
    return summary


__all__ = ["calibrate_text", "embed_pairs", "labelled_pairs", "precision_recall", "write_into_model"]
