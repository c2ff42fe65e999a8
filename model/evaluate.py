"""The evaluation suite: several models, the standard benchmarks, one table (Markdown + JSON).

``clip-model eval --model A --model B`` embeds every benchmark with
:class:`~clip_ingest.connectors.openclip_embedder.OpenClipEmbedder`, the embedder
ingestion uses, so the numbers describe exactly the vectors a collection will hold.

Benchmarks (datasets under one root: ``--data-root``, else ``$CLIP_INGEST_DATA``;
layouts as described in that folder's ``README.md``):

==============  ==========================================================================
``eth80``       ETH-80 objects 7-10 of each category (never used for training):
                instance retrieval (relevant = same object) and category-level retrieval
                (relevant = same category), all-vs-all mAP and R@1.
``caltech101``  Caltech-101 test split: weighted k-NN (k=21, T=0.1, train split as memory)
                and text-prompt classification with ``"a photo of a {class}."``. Not
                zero-shot for our models, which train on Caltech-101 class captions.
``flickr8k``    text->image and image->text Recall@1/5/10 (five captions per image).
``eth80-val``   the ETH-80 retrieval on objects 1-6 (not run by default): validation for
                pretraining choices; fine-tuning trains on these objects.
``cifar10``     true zero-shot classification of the CIFAR-10 test split (10,000 images),
                prompts :data:`CIFAR10_TEMPLATES` averaged per class (CLIP's protocol);
                no training set or pseudo-caption set here contains these prompts.
==============  ==========================================================================

A missing dataset folder is reported (in the table and on stderr) and the other
benchmarks still run.

These are *test* benchmarks: report them, never tune on them. Model selection and
early stopping must use a validation split of the training data (``val_fraction`` of
the training stages; for ETH-80 only objects 1-6, e.g. held-out views), never the
objects, split or captions evaluated here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from clip_ingest.connectors.embedder import Embedder

from . import metrics
from .stats import format_difference, paired_bootstrap

DATA_ENV = "CLIP_INGEST_DATA"
ETH80_EVAL_OBJECTS = (7, 8, 9, 10)
ETH80_TRAIN_OBJECTS = (1, 2, 3, 4, 5, 6)
ZERO_SHOT_TEMPLATES = ("a photo of a {class}.",)
CIFAR10_TEMPLATES = (
    "a blurry photo of a {class}.",
    "a low resolution photo of the {class}.",
    "a pixelated photo of the {class}.",
    "a photo of the small {class}.",
    "a photo of the big {class}.",
)
"""Five of CLIP's CIFAR-10 prompts (Radford et al., 2021), none used in any training caption."""
DEFAULT_BENCHMARKS = ("eth80", "caltech101", "flickr8k", "cifar10")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetMissingError(FileNotFoundError):
    """A benchmark's dataset folder or index file does not exist."""


@dataclass(frozen=True)
class EvalOptions:
    """How to run the suite.

    ``max_per_class`` keeps at most that many images per ETH-80 object / Caltech
    class and split (and that many Flickr8k images), evenly spaced, for quick runs;
    ``None`` evaluates everything (the numbers to report).
    """

    data_root: Path
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    max_per_class: int | None = None
    device: str = "auto"
    batch_size: int = 64
    runtimes: tuple[str, ...] = ("torch",)
    """Each model is evaluated on each of these: ``torch``, ``onnx`` or ``onnx-int8`` (the
    quality cost of a faster runtime, measured on the same vectors a collection would hold)."""


#: ``--runtime`` values of ``clip-model eval`` -> (runtime, quantize) of :func:`load_embedder`
EVAL_RUNTIMES = {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}


@dataclass
class ModelResult:
    """One model's column of the table (``per_query`` kept in memory for paired statistics,
    never written to eval.json)."""

    spec: str
    name: str
    model_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    differences: dict[str, dict[str, object]] = field(default_factory=dict)
    """Per metric, ``{"diff", "ci"}``: this column minus the report's ``against`` column, with the
    paired-bootstrap 95 % CI over queries (:func:`compare_to`); empty for that column itself."""


@dataclass
class EvalReport:
    """The whole comparison: one :class:`ModelResult` per model and the datasets that were missing."""

    models: list[ModelResult]
    missing: dict[str, str]
    options: dict[str, object]
    against: str | None = None
    """The column (model name) every other column's ``differences`` are measured against."""

    def to_json(self) -> dict[str, object]:
        return {
            "models": [{k: v for k, v in vars(m).items() if k != "per_query"} for m in self.models],
            "missing": self.missing,
            "options": self.options,
            "against": self.against,
        }


def resolve_data_root(explicit: str | os.PathLike | None) -> Path:
    """``explicit``, else ``$CLIP_INGEST_DATA``, made absolute; raises :class:`DatasetMissingError` if
    neither names a folder. Absolute, because manifests written from it are read relative to the
    manifest's own folder: a relative ``../shared/data`` would point somewhere else there."""
    root = explicit or os.environ.get(DATA_ENV)
    if not root:
        raise DatasetMissingError(f"no data root: pass --data-root or set {DATA_ENV} (e.g. /work/shared/data)")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DatasetMissingError(f"data root {path} is not a folder")
    return path


def _require(path: Path, dataset: str) -> Path:
    if not path.exists():
        raise DatasetMissingError(f"{dataset}: {path} not found (see the data root's README.md for the layout)")
    return path


def _evenly(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced (all of them when ``limit`` is None)."""
    if limit is None or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Eth80Split:
    """ETH-80 images with their object id (``cup7``) and category (``cup``)."""

    paths: list[Path]
    objects: list[str]
    categories: list[str]


def load_eth80(root: Path, objects: Sequence[int] = ETH80_EVAL_OBJECTS, max_per_class: int | None = None) -> Eth80Split:
    """``eth80/<category>/<category><n>/*.jpg`` for object numbers ``objects``."""
    base = _require(root / "eth80", "eth80")
    paths, object_ids, categories = [], [], []
    for category in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for n in objects:
            folder = base / category / f"{category}{n}"
            if not folder.is_dir():
                continue
            for path in _evenly(_images(folder), max_per_class):
                paths.append(path)
                object_ids.append(folder.name)
                categories.append(category)
    if not paths:
        raise DatasetMissingError(f"eth80: no images of objects {list(objects)} under {base}")
    return Eth80Split(paths, object_ids, categories)


def eth80_rows(root: Path, objects: Sequence[int] = ETH80_TRAIN_OBJECTS) -> Iterator[dict]:
    """Training manifest rows for ETH-80 ``objects`` (default 1-6, never the evaluated 7-10).

    The label is the object (``cup3``: instance-level retrieval fine-tuning); the only
    caption is category level (``a photo of a cup``), as ETH-80 has nothing finer.
    """
    data = load_eth80(root, objects)
    for path, obj, category in zip(data.paths, data.objects, data.categories):
        yield {"path": str(path), "label": obj, "captions": [f"a photo of a {category}"]}


def load_caltech101(root: Path, split: str, max_per_class: int | None = None) -> tuple[list[Path], list[str]]:
    """Paths and class names of Caltech-101's ``train`` or ``test`` split (``<split>.txt``)."""
    base = _require(root / "caltech101", "caltech101")
    listing = _require(base / f"{split}.txt", "caltech101")
    by_class: dict[str, list[Path]] = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip():
            by_class.setdefault(line.split("/", 1)[0], []).append(base / line.strip())
    paths, labels = [], []
    for name in sorted(by_class):
        chosen = _evenly(by_class[name], max_per_class)
        paths += chosen
        labels += [name] * len(chosen)
    return paths, labels


def load_flickr8k(root: Path, max_images: int | None = None) -> tuple[list[Path], list[str], list[int]]:
    """Image paths, captions and each caption's image index from ``flickr8k/captions.csv``."""
    base = _require(root / "flickr8k", "flickr8k")
    with _require(base / "captions.csv", "flickr8k").open(newline="", encoding="utf-8") as f:
        rows = [(r["image"], r["caption"]) for r in csv.DictReader(f)]
    names = _evenly(sorted({image for image, _ in rows}), max_images)
    index = {name: i for i, name in enumerate(names)}
    captions = [(caption, index[image]) for image, caption in rows if image in index]
    return [base / "images" / n for n in names], [c for c, _ in captions], [i for _, i in captions]


PerQuery = dict[str, np.ndarray]
"""Metric name -> one value per query (AP, hit, correct...); the metric is their mean, and paired
statistics (:mod:`clip_ingest.model.stats`) resample them."""


def _eth80_retrieval(embedder: Embedder, options: EvalOptions, objects: Sequence[int], prefix: str) -> PerQuery:
    data = load_eth80(options.data_root, objects, max_per_class=options.max_per_class)
    emb = embedder.embed_images(data.paths)
    return {
        f"{prefix} instance mAP": metrics.average_precisions(emb, data.objects),
        f"{prefix} instance R@1": metrics.top1_hits(emb, data.objects),
        f"{prefix} category mAP": metrics.average_precisions(emb, data.categories),
        f"{prefix} category R@1": metrics.top1_hits(emb, data.categories),
    }


def eval_eth80(embedder: Embedder, options: EvalOptions) -> PerQuery:
    """Instance- and category-level all-vs-all retrieval on the unseen ETH-80 objects."""
    return _eth80_retrieval(embedder, options, ETH80_EVAL_OBJECTS, "eth80")


def eval_eth80_val(embedder: Embedder, options: EvalOptions) -> PerQuery:
    """The same retrieval on ETH-80 objects 1-6: a *validation* set for choices made before any
    fine-tuning on them (pretraining recipes), never a test number."""
    return _eth80_retrieval(embedder, options, ETH80_TRAIN_OBJECTS, "eth80-val")


def eval_caltech101(embedder: Embedder, options: EvalOptions) -> PerQuery:
    """k-NN (train split as memory) and text-prompt accuracy on the Caltech-101 test split."""
    train_paths, train_labels = load_caltech101(options.data_root, "train", options.max_per_class)
    test_paths, test_labels = load_caltech101(options.data_root, "test", options.max_per_class)
    test_emb = embedder.embed_images(test_paths)
    classes = sorted(set(train_labels) | set(test_labels))
    class_emb = metrics.class_text_embeddings(
        embedder.embed_texts, [c.replace("_", " ") for c in classes], ZERO_SHOT_TEMPLATES
    )
    class_of = {c: i for i, c in enumerate(classes)}
    return {
        "caltech101 kNN acc": metrics.knn_correct(
            embedder.embed_images(train_paths), train_labels, test_emb, test_labels
        ),
        "caltech101 prompt acc": metrics.zero_shot_correct(
            test_emb, [class_of[c] for c in test_labels], class_emb
        ),
    }


def eval_flickr8k(embedder: Embedder, options: EvalOptions) -> PerQuery:
    """Text->image and image->text Recall@1/5/10."""
    paths, captions, owner = load_flickr8k(options.data_root, options.max_per_class)
    images = embedder.embed_images(paths)
    texts = embedder.embed_texts(captions)
    t2i = metrics.text_to_image_ranks(texts, images, owner)
    i2t = metrics.image_to_text_ranks(images, texts, owner)
    out: PerQuery = {}
    for direction, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in metrics.DEFAULT_RECALL_KS:
            out[f"flickr8k {direction} R@{k}"] = (ranks < k).astype(np.float64)
    return out


def load_cifar10(root: Path, max_per_class: int | None = None) -> tuple[list[Path], list[str]]:
    """Paths and class names of ``cifar10/test/<class>/*.jpg``."""
    base = _require(root / "cifar10" / "test", "cifar10")
    paths, labels = [], []
    for name in sorted(p.name for p in base.iterdir() if p.is_dir()):
        chosen = _evenly(_images(base / name), max_per_class)
        paths += chosen
        labels += [name] * len(chosen)
    if not paths:
        raise DatasetMissingError(f"cifar10: no images under {base}")
    return paths, labels


def eval_cifar10(embedder: Embedder, options: EvalOptions) -> PerQuery:
    """True zero-shot accuracy on CIFAR-10 (classes and prompts unseen in training)."""
    paths, labels = load_cifar10(options.data_root, options.max_per_class)
    classes = sorted(set(labels))
    class_emb = metrics.class_text_embeddings(embedder.embed_texts, classes, CIFAR10_TEMPLATES)
    class_of = {c: i for i, c in enumerate(classes)}
    return {
        "cifar10 zero-shot acc": metrics.zero_shot_correct(
            embedder.embed_images(paths), [class_of[c] for c in labels], class_emb
        )
    }


BENCHMARKS: dict[str, Callable[[Embedder, EvalOptions], PerQuery]] = {
    "eth80": eval_eth80,
    "eth80-val": eval_eth80_val,
    "caltech101": eval_caltech101,
    "flickr8k": eval_flickr8k,
    "cifar10": eval_cifar10,
}


def evaluate_embedder_per_query(embedder: Embedder, options: EvalOptions, missing: dict[str, str]) -> PerQuery:
    """Per-query values of all selected benchmarks; a missing dataset is recorded in ``missing`` and skipped."""
    results: PerQuery = {}
    for name in options.benchmarks:
        if name in missing:
            continue
        try:
            results.update(BENCHMARKS[name](embedder, options))
        except DatasetMissingError as exc:
            missing[name] = str(exc)
            print(f"clip-model eval: skipping {name}: {exc}", file=sys.stderr)
    return results


def image_tower_key(embedder: Embedder) -> str | None:
    """A hash of what decides an open_clip embedder's image vectors: its image tower's weights,
    its preprocessing and its device and precision; ``None`` for other embedders (ONNX)."""
    model, loaded = getattr(embedder, "model", None), getattr(embedder, "loaded", None)
    visual = getattr(model, "visual", None)
    if visual is None or loaded is None:
        return None
    from clip_ingest.connectors.openclip_embedder import hash_weights

    settings = [type(embedder).__name__, loaded.preprocess_cfg, str(getattr(embedder, "device", "")),
                bool(getattr(embedder, "autocast", False))]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    return hash_weights(digest, visual).hexdigest()


class SharedImageVectors:
    """Image vectors of one evaluation run, shared by the models with the same image tower.

    The realigned rows of the paper's experiment keep their parent's image tower by
    construction, so their image vectors are the parent's: embedding each benchmark image once
    per image tower (instead of once per model) saves about half the image forward passes of
    ``clip-model experiment``'s evaluation and gives those rows exactly the same vectors.
    """

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def wrap(self, embedder: Embedder) -> Embedder:
        key = image_tower_key(embedder)
        return embedder if key is None else _CachedImages(embedder, key, self._vectors)


class _CachedImages:
    """``embedder`` whose ``embed_images`` of file paths reuses the vectors in ``store``."""

    def __init__(self, embedder: Embedder, key: str, store: dict[tuple[str, str], np.ndarray]) -> None:
        self._embedder, self._key, self._store = embedder, key, store

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)

    def embed_images(self, items) -> np.ndarray:
        items = list(items)
        if not items or not all(isinstance(item, (str, Path)) for item in items):
            return self._embedder.embed_images(items)
        keys = [(self._key, str(item)) for item in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self._store))
        if todo:
            for k, vector in zip(todo, self._embedder.embed_images([path for _, path in todo])):
                self._store[k] = vector
        return np.stack([self._store[k] for k in keys])


def evaluate_models(specs: Sequence[str], options: EvalOptions) -> EvalReport:
    """Evaluate each model spec on each runtime in turn (one model in memory at a time); models
    with the same image tower share its image vectors (:class:`SharedImageVectors`)."""
    from clip_ingest.connectors.runtime import load_embedder

    unknown = sorted(set(options.benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    bad = sorted(set(options.runtimes) - set(EVAL_RUNTIMES))
    if bad:
        raise ValueError(f"unknown runtime(s) {bad}; choose from {sorted(EVAL_RUNTIMES)}")
    missing: dict[str, str] = {}
    models = []
    shared = SharedImageVectors()
    for spec in specs:
        for runtime in options.runtimes:
            engine, quantize = EVAL_RUNTIMES[runtime]
            embedder = load_embedder(spec, runtime=engine, quantize=quantize, device=options.device, batch_size=options.batch_size)
            per_query = evaluate_embedder_per_query(shared.wrap(embedder), options, missing)
            scores = {name: float(values.mean()) for name, values in per_query.items()}
            name = embedder.name if runtime == "torch" else f"{embedder.name} [{runtime}]"
            models.append(ModelResult(spec, name, embedder.model_id, scores, per_query))
            del embedder
    settings = {
        "data_root": str(options.data_root),
        "benchmarks": list(options.benchmarks),
        "max_per_class": options.max_per_class,
    }
    return EvalReport(models, missing, settings)


def compare_to(report: EvalReport, spec: str) -> EvalReport:
    """Fill every other column's ``differences`` to the first column evaluated from ``spec``:
    per metric both have, the mean per-query difference and its paired-bootstrap 95 % CI
    (:func:`~clip_ingest.model.stats.paired_bootstrap`, the statistics of ``clip-model
    experiment`` with one seed). Two models of one evaluation see the same queries in the same
    order, so the pairing is exact. Returns ``report``, updated in place."""
    reference = next((m for m in report.models if m.spec == spec), None)
    if reference is None:
        raise ValueError(f"{spec!r} was not evaluated; evaluated: {[m.spec for m in report.models]}")
    for model in report.models:
        if model is reference:
            continue
        model.differences = {}
        for metric in model.per_query:
            if metric in reference.per_query:
                diff = paired_bootstrap([model.per_query[metric]], reference.per_query[metric])
                model.differences[metric] = {"diff": diff.mean, "ci": [diff.low, diff.high]}
    report.against = reference.name
    return report


def _cell(model: ModelResult, metric: str) -> str:
    if metric not in model.metrics:
        return "-"
    if metric in model.differences:
        entry = model.differences[metric]
        return format_difference(model.metrics[metric], entry["diff"], *entry["ci"])
    return f"{100 * model.metrics[metric]:.1f}"


def render_markdown(report: EvalReport) -> str:
    """One row per metric, one column per model (values in %), missing datasets listed below;
    after :func:`compare_to`, each other column also shows its difference to that column and
    the CI."""
    rows: list[str] = []
    for model in report.models:
        rows += [k for k in model.metrics if k not in rows]
    header = "| metric | " + " | ".join(m.name for m in report.models) + " |"
    lines = [header, "|---|" + "---:|" * len(report.models)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_cell(m, row) for m in report.models) + " |")
    lines.append("")
    if report.against:
        lines.append(f"In brackets: the difference to `{report.against}` and its paired-bootstrap 95 % CI over "
                     "queries (bold: the CI excludes 0). Values in %.")
    lines += [f"- `{m.name}`: `{m.spec}` (model_id `{m.model_id}`)" for m in report.models]
    lines += [f"- **{name} missing**: {why}" for name, why in report.missing.items()]
    if report.options.get("max_per_class"):
        lines.append(f"- subsampled: at most {report.options['max_per_class']} images per class (not comparable to full runs)")
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    json_path.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path
