"""Captions made from class names: the phrase a person would use for one object of a class,
in several phrasings (a model trained on one template answers only that template)."""

from __future__ import annotations

import re

# Plural or oddly named Caltech-101 folders, as a person would name one object of the class.
_CLASS_PHRASES = {
    "faces_easy": "face", "faces": "face", "leopards": "leopard", "motorbikes": "motorbike",
    "airplanes": "airplane", "car_side": "car", "scissors": "pair of scissors",
}
_KEEP_S = ("ss", "us", "is", "os")

CLASS_TEMPLATES = (
    "a photo of {article} {name}.",
    "a picture of {article} {name}.",
    "{article} {name} in the picture.",
    "an image showing {article} {name}.",
    "a close-up of the {name}.",
    "the {name}.",
)
"""Varied phrasings for captions built from class names. None of them is a CIFAR-10 evaluation
prompt (:data:`clip_ingest.model.benchmarks.CIFAR10_TEMPLATES`), so CIFAR-10 stays zero-shot."""


def class_phrase(label: str) -> str:
    """A folder/class name as a natural noun phrase: ``Faces_easy`` -> ``face``,
    ``airplanes`` -> ``airplane``, ``water_lilly`` -> ``water lilly``, ``ibis`` -> ``ibis``.

    Underscores and dashes become spaces, case is folded, a plural last word is made
    singular (``-s``, not ``-ss``/``-us``/``-is``/``-os``; known irregular Caltech names by table).
    """
    key = label.strip().lower()
    if key in _CLASS_PHRASES:
        return _CLASS_PHRASES[key]
    words = re.sub(r"[_\-]+", " ", key).split()
    if not words:
        return key
    last = words[-1]
    if len(last) > 3 and last.endswith("ies"):
        words[-1] = last[:-3] + "y"
    elif len(last) > 3 and last.endswith("s") and not last.endswith(_KEEP_S):
        words[-1] = last[:-1]
    return " ".join(words)


def article(phrase: str) -> str:
    """``a`` or ``an`` before ``phrase``."""
    return "an" if phrase[:1] in "aeiou" else "a"


def class_captions(label: str, templates: tuple[str, ...] = CLASS_TEMPLATES) -> list[str]:
    """Captions for one class: every template over :func:`class_phrase` with the right article."""
    name = class_phrase(label)
    return [t.format(article=article(name), name=name) for t in templates]
