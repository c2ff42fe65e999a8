"""Measure models on a user's own labelled images: the numbers that should decide a switch.

Per query (so that two models compare with paired-bootstrap CIs, :mod:`clip_ingest.model.stats`):

=============================  ==================================================================
``image mAP``, ``image R@1``   all-vs-all image->image retrieval, relevant = same label
``kNN acc``                    weighted k-NN (k=21, T=0.1), each image classified by all others
``text mAP``, ``text R@5``     each distinct caption queries the images; relevant = the images
                               that carry it (only when the images have captions)
``label zero-shot acc``        each image classified among the label *names* ("a photo of a
                               {name}"), a name being the label with ``_``/``-`` as spaces and
                               trailing digits dropped, so ``apple3`` and ``apple5`` share
                               ``apple``: the kind of thing, which is what words can name
=============================  ==================================================================

The results are an :class:`~clip_ingest.model.eval_report.EvalReport`, so the rendering and the
comparison (``compare_to``) of ``clip-model eval`` apply unchanged.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.runtime import load_embedder

from . import metrics
from .adapt_defaults import FOLDER_SPLITS
from .benchmarks import ZERO_SHOT_TEMPLATES
from .data import Sample
from .eval_report import EvalReport, ModelResult, PerQuery, means
from .user_data import DEFAULT_HELD_OUT_FRACTION, DEFAULT_VAL_FRACTION, load_user_samples, split_by_label
from .vector_cache import SharedImageVectors

IMAGE_MAP = "image mAP"
TEXT_MAP = "text mAP"
TEXT_R5 = "text R@5"
ZERO_SHOT = "label zero-shot acc"


def label_name(label: str) -> str:
    """The words of a label: ``golden_retriever`` -> ``golden retriever``, ``apple3`` -> ``apple``."""
    words = re.sub(r"[_\-]+", " ", label).strip()
    return re.sub(r"\s*\d+$", "", words) or words


def caption_relevance(samples: Sequence[Sample]) -> tuple[list[str], np.ndarray]:
    """The distinct captions of ``samples`` and ``relevant[caption, image]`` (the image carries it)."""
    captions = sorted({c for s in samples for c in s.captions})
    column = {c: j for j, c in enumerate(captions)}
    relevant = np.zeros((len(captions), len(samples)), dtype=bool)
    for i, s in enumerate(samples):
        for c in s.captions:
            relevant[column[c], i] = True
    return captions, relevant


def evaluate_samples(embedder: Embedder, samples: Sequence[Sample], prefix: str = "") -> PerQuery:
    """Per-query values of the metrics above on ``samples`` (labelled; captions optional)."""
    paths = [s.path for s in samples]
    labels = [s.label for s in samples]
    images = embedder.embed_images(paths)
    out: PerQuery = {
        f"{prefix}{IMAGE_MAP}": metrics.average_precisions(images, labels),
        f"{prefix}image R@1": metrics.top1_hits(images, labels),
        f"{prefix}kNN acc": metrics.knn_correct_leave_one_out(images, labels),
    }
    if any(s.captions for s in samples):
        captions, relevant = caption_relevance(samples)
        ap, hit = metrics.text_query_hits(embedder.embed_texts(captions), images, relevant)
        out[f"{prefix}{TEXT_MAP}"], out[f"{prefix}{TEXT_R5}"] = ap, hit
    names = sorted({label_name(label) for label in labels})
    if len(names) >= 2:
        class_emb = metrics.class_text_embeddings(embedder.embed_texts, names, ZERO_SHOT_TEMPLATES)
        index = {n: i for i, n in enumerate(names)}
        out[f"{prefix}{ZERO_SHOT}"] = metrics.zero_shot_correct(images, [index[label_name(x)] for x in labels], class_emb)
    return out


def evaluate_on_samples(specs: Sequence[str], samples: Sequence[Sample], *, names: Sequence[str] | None = None,
                        device: str = "auto", batch_size: int = 64, setting: dict[str, object] | None = None) -> EvalReport:
    """One column per model spec on ``samples`` (one model in memory at a time; models with the same
    image tower share its image vectors). ``names`` relabels the columns (e.g. ``base``). Every
    model runs on torch, the weights as trained, so that a base shipping ONNX towers and a
    fine-tuned model without them are measured alike."""
    shared = SharedImageVectors()
    models = []
    for i, spec in enumerate(specs):
        embedder = load_embedder(spec, runtime="torch", device=device, batch_size=batch_size)
        per_query = evaluate_samples(shared.wrap(embedder), samples)
        models.append(ModelResult(spec, names[i] if names else embedder.name, embedder.model_id, means(per_query),
                                  per_query))
        del embedder
    return EvalReport(models, {}, {"images": len(samples), "labels": len({s.label for s in samples}), **(setting or {})})


def evaluate_folder(specs: Sequence[str], data: str, split: str = "held_out", *, seed: int = 0,
                    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION, val_fraction: float = DEFAULT_VAL_FRACTION,
                    device: str = "auto", batch_size: int = 64) -> EvalReport:
    """Every model on one side of a user folder's split by label (the split ``clip-model adapt``
    makes with the same fractions and seed), or on all of it (``split="all"``)."""
    if split not in FOLDER_SPLITS:
        raise ValueError(f"split must be one of {', '.join(FOLDER_SPLITS)}, not {split!r}")
    samples = load_user_samples(data)
    if split != "all":
        samples = getattr(split_by_label(samples, held_out_fraction, val_fraction, seed), split)
    return evaluate_on_samples(specs, samples, device=device, batch_size=batch_size,
                               setting={"data": data, "split": split, "split_seed": seed})
