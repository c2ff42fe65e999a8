"""The test benchmarks of ``clip-model eval``: one class per benchmark.

A benchmark is built once with its data, as a validation score
(:class:`~clip_ingest.model.validation.ValidationScore`) is built with its split, has a
``name`` and is called to score: a validation score scores the weights it was built on (one
number, higher is better); a benchmark scores an embedder it is given, one value per query of
each metric (:data:`~clip_ingest.model.eval_report.PerQuery`), so that two models compare with
paired statistics. Data sets are read by :mod:`clip_ingest.model.datasets` (:meth:`load`),
results rendered by :mod:`clip_ingest.model.tables`.

==============  ==========================================================================
``eth80``       ETH-80 objects 7-10 of each category (never used for training):
                instance retrieval (relevant = same object) and category-level retrieval
                (relevant = same category), all-vs-all mAP and R@1.
``caltech101``  Caltech-101 test split: weighted k-NN (k=21, T=0.1, train split as memory)
                and text-prompt classification with ``"a photo of a {class}."``. Not
                zero-shot for our models, which train on Caltech-101 class captions.
``flickr8k``    text->image and image->text Recall@1/5/10 (five captions per image).
``cifar10``     true zero-shot classification of the CIFAR-10 test split (10,000 images),
                prompts :data:`CIFAR10_TEMPLATES` averaged per class (CLIP's protocol);
                no training set or pseudo-caption set here contains these prompts.
``eth80-val``   the ETH-80 retrieval on objects 1-6 (not run by default): validation for
                pretraining choices; fine-tuning trains on these objects.
==============  ==========================================================================

These are *test* benchmarks: report them, never tune on them. Model selection and early
stopping use a validation split of the training data (``val_fraction`` of the training stages;
for ETH-80 only objects 1-6), never the objects, split or captions evaluated here.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, Sequence

import numpy as np

from clip_ingest.connectors.embedder import Embedder

from . import metrics
from .datasets.caltech import load_caltech101
from .datasets.cifar10 import load_cifar10
from .datasets.eth80 import EVAL_OBJECTS, TRAIN_OBJECTS, Eth80Split, load_eth80
from .datasets.flickr import load_flickr8k
from .eval_report import PerQuery

ZERO_SHOT_TEMPLATES = ("a photo of a {class}.",)
CIFAR10_TEMPLATES = (
    "a blurry photo of a {class}.",
    "a low resolution photo of the {class}.",
    "a pixelated photo of the {class}.",
    "a photo of the small {class}.",
    "a photo of the big {class}.",
)
"""Five of CLIP's CIFAR-10 prompts (Radford et al., 2021), none used in any training caption."""


class Benchmark(Protocol):
    """A test benchmark with its data loaded: ``benchmark(embedder)`` -> per-query values."""

    name: ClassVar[str]

    @classmethod
    def load(cls, root: Path, max_per_class: int | None) -> "Benchmark":
        """Read the data set under the data root ``root`` (at most ``max_per_class`` images per
        class, evenly spaced; ``None``: all of them); raises ``DatasetMissingError``."""
        ...

    def __call__(self, embedder: Embedder) -> PerQuery: ...


class Eth80Retrieval:
    """Instance- and category-level all-vs-all retrieval on the unseen ETH-80 objects."""

    name: ClassVar[str] = "eth80"
    objects: ClassVar[Sequence[int]] = EVAL_OBJECTS

    def __init__(self, data: Eth80Split) -> None:
        self.data = data

    @classmethod
    def load(cls, root: Path, max_per_class: int | None) -> "Eth80Retrieval":
        return cls(load_eth80(root, cls.objects, max_per_class=max_per_class))

    def __call__(self, embedder: Embedder) -> PerQuery:
        emb = embedder.embed_images(self.data.paths)
        return {
            f"{self.name} instance mAP": metrics.average_precisions(emb, self.data.objects),
            f"{self.name} instance R@1": metrics.top1_hits(emb, self.data.objects),
            f"{self.name} category mAP": metrics.average_precisions(emb, self.data.categories),
            f"{self.name} category R@1": metrics.top1_hits(emb, self.data.categories),
        }


class Eth80ValRetrieval(Eth80Retrieval):
    """The same retrieval on ETH-80 objects 1-6: a *validation* set for choices made before any
    fine-tuning on them (pretraining recipes), never a test number."""

    name: ClassVar[str] = "eth80-val"
    objects: ClassVar[Sequence[int]] = TRAIN_OBJECTS


class Caltech101Classification:
    """k-NN (train split as memory) and text-prompt accuracy on the Caltech-101 test split."""

    name: ClassVar[str] = "caltech101"

    def __init__(self, train: tuple[list[Path], list[str]], test: tuple[list[Path], list[str]]) -> None:
        (self.train_paths, self.train_labels), (self.test_paths, self.test_labels) = train, test

    @classmethod
    def load(cls, root: Path, max_per_class: int | None) -> "Caltech101Classification":
        return cls(load_caltech101(root, "train", max_per_class), load_caltech101(root, "test", max_per_class))

    def __call__(self, embedder: Embedder) -> PerQuery:
        test_emb = embedder.embed_images(self.test_paths)
        classes = sorted(set(self.train_labels) | set(self.test_labels))
        class_emb = metrics.class_text_embeddings(
            embedder.embed_texts, [c.replace("_", " ") for c in classes], ZERO_SHOT_TEMPLATES
        )
        class_of = {c: i for i, c in enumerate(classes)}
        return {
            "caltech101 kNN acc": metrics.knn_correct(
                embedder.embed_images(self.train_paths), self.train_labels, test_emb, self.test_labels
            ),
            "caltech101 prompt acc": metrics.zero_shot_correct(
                test_emb, [class_of[c] for c in self.test_labels], class_emb
            ),
        }


class Flickr8kRetrieval:
    """Text->image and image->text Recall@1/5/10."""

    name: ClassVar[str] = "flickr8k"

    def __init__(self, paths: list[Path], captions: list[str], owner: list[int]) -> None:
        self.paths, self.captions, self.owner = paths, captions, owner

    @classmethod
    def load(cls, root: Path, max_per_class: int | None) -> "Flickr8kRetrieval":
        return cls(*load_flickr8k(root, max_per_class))

    def __call__(self, embedder: Embedder) -> PerQuery:
        images = embedder.embed_images(self.paths)
        texts = embedder.embed_texts(self.captions)
        t2i = metrics.text_to_image_ranks(texts, images, self.owner)
        i2t = metrics.image_to_text_ranks(images, texts, self.owner)
        out: PerQuery = {}
        for direction, ranks in (("t2i", t2i), ("i2t", i2t)):
            for k in metrics.DEFAULT_RECALL_KS:
                out[f"flickr8k {direction} R@{k}"] = (ranks < k).astype(np.float64)
        return out


class Cifar10ZeroShot:
    """True zero-shot accuracy on CIFAR-10 (classes and prompts unseen in training)."""

    name: ClassVar[str] = "cifar10"

    def __init__(self, paths: list[Path], labels: list[str]) -> None:
        self.paths, self.labels = paths, labels

    @classmethod
    def load(cls, root: Path, max_per_class: int | None) -> "Cifar10ZeroShot":
        return cls(*load_cifar10(root, max_per_class))

    def __call__(self, embedder: Embedder) -> PerQuery:
        classes = sorted(set(self.labels))
        class_emb = metrics.class_text_embeddings(embedder.embed_texts, classes, CIFAR10_TEMPLATES)
        class_of = {c: i for i, c in enumerate(classes)}
        return {
            "cifar10 zero-shot acc": metrics.zero_shot_correct(
                embedder.embed_images(self.paths), [class_of[c] for c in self.labels], class_emb
            )
        }


BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls for cls in (Eth80Retrieval, Caltech101Classification, Flickr8kRetrieval, Cifar10ZeroShot,
                              Eth80ValRetrieval)
}
"""Every benchmark by name, in the order ``clip-model eval --benchmark`` lists them."""
DEFAULT_BENCHMARKS = ("eth80", "caltech101", "flickr8k", "cifar10")
