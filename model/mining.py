"""Pseudo-captions for MCIP and realignment.

Three sources:

(a) :func:`mine_captions`: from a caption pool (e.g. the captions of another data set),
    embedded once after de-duplication; each image keeps its top-``k`` most similar pool
    captions whose cosine similarity is at least ``threshold`` (paper: k=20, 0.27).
    Where this departs from the paper: the paper mines the ~12M captions of CC12M with the
    large pretrained CLIP it fine-tunes; here the pool and the mining model are whatever the
    recipe names (a small pool and a small model give lower similarities, so the paper's 0.27
    is a starting point to check on a validation split, not a constant), and the pool is
    de-duplicated exactly, not semantically;
(b) :func:`with_template_captions`: templates over class names ("a photo of a {label}.");
(c) captions given in a manifest (read by :func:`clip_ingest.model.data.read_manifest`).

:func:`run_mine_captions` is the ``clip-model mine-captions`` stage: it writes a JSONL
manifest with the mined captions that the finetune/realign stages read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from clip_ingest.connectors.factory import load_model

from .data import DataError, Sample, load_samples, write_manifest
from .datasets.class_names import class_phrase
from .distributed import setup_distributed
from .features import embed_samples, embed_texts

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {label}.",)


def with_template_captions(samples: Sequence[Sample], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[Sample]:
    """Samples with one caption per template (``{label}`` filled in with the label as a noun
    phrase, :func:`~clip_ingest.model.datasets.class_names.class_phrase`: ``Motorbikes`` -> ``motorbike``)
    added to their captions.

    Unlabelled samples are returned unchanged.
    """
    out = []
    for s in samples:
        if s.label is None:
            out.append(s)
            continue
        extra = tuple(t.format(label=class_phrase(s.label)) for t in templates)
        out.append(Sample(s.path, s.label, s.captions + tuple(c for c in extra if c not in s.captions)))
    return out


def dedupe(texts: Sequence[str]) -> list[str]:
    """Stripped, non-empty texts without repeats, first occurrence first."""
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def top_k_captions(
    image_embeddings: torch.Tensor,
    caption_embeddings: torch.Tensor,
    captions: Sequence[str],
    *,
    k: int = 20,
    threshold: float = 0.27,
    chunk: int = 4096,
) -> list[list[str]]:
    """For every image row, up to ``k`` captions with cosine similarity >= ``threshold``, best first.

    Both inputs must be L2-normalised. Images are processed in chunks of ``chunk`` so
    the similarity matrix never holds more than ``chunk x len(captions)`` floats.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    k = min(k, len(captions))
    result: list[list[str]] = []
    for start in range(0, len(image_embeddings), chunk):
        sims = image_embeddings[start : start + chunk] @ caption_embeddings.T
        values, indices = sims.topk(k, dim=1)
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            result.append([captions[j] for v, j in zip(row_values, row_indices) if v >= threshold])
    return result


def read_caption_pool(source: str | Path) -> list[str]:
    """Captions of a pool: a ``.txt`` file with one caption per line, or a manifest's captions."""
    path = Path(source)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"caption pool not found: {source}")
        return dedupe(path.read_text(encoding="utf-8").splitlines())
    return dedupe([c for s in load_samples(path) for c in s.captions])


@dataclass
class MineConfig:
    """``clip-model mine-captions``: mine pseudo-captions for ``data`` from ``pool``.

    ``model`` embeds both images and pool captions (typically the pretrained model you
    are about to fine-tune); ``output`` is the JSONL manifest written.
    """

    model: str
    data: str
    pool: str
    output: str
    k: int = 20
    threshold: float = 0.27
    keep_existing: bool = True
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"


@dataclass
class MineResult:
    """The manifest written and how many images got captions."""

    output: Path
    images: int
    with_captions: int
    skipped: int
    pool_size: int
    seconds: float


def run_mine_captions(cfg: MineConfig) -> MineResult:
    """Embed the pool once, embed every image, keep top-k captions above the threshold."""
    started = time.perf_counter()
    _, device = setup_distributed(cfg.device)
    loaded = load_model(cfg.model, device=device)
    samples = load_samples(cfg.data)
    pool = read_caption_pool(cfg.pool)
    if not pool:
        raise DataError(f"caption pool {cfg.pool} has no captions")
    pool_emb = embed_texts(loaded.model, loaded.tokenizer, pool, device=device, batch_size=cfg.batch_size * 4)
    img_emb, indices, skipped = embed_samples(
        loaded.model, samples, loaded.preprocess, device=device, batch_size=cfg.batch_size, num_workers=cfg.num_workers
    )
    mined = top_k_captions(img_emb.to(device), pool_emb, pool, k=cfg.k, threshold=cfg.threshold)
    by_index = dict(zip(indices.tolist(), mined))
    out = []
    for i, s in enumerate(samples):
        if i not in by_index:
            continue  # undecodable: training would skip it anyway
        base = s.captions if cfg.keep_existing else ()
        out.append(Sample(s.path, s.label, tuple(dedupe([*base, *by_index[i]]))))
    path = write_manifest(out, cfg.output)
    with_captions = sum(1 for s in out if s.captions)
    log.info("mined captions for %d/%d images from a pool of %d -> %s", with_captions, len(out), len(pool), path)
    return MineResult(path, len(out), with_captions, skipped, len(pool), time.perf_counter() - started)
