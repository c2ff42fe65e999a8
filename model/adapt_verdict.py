"""The plain verdict of a guided adaptation: better or not, for image and for text search.

A gain is claimed only when the paired-bootstrap 95 % CI of the held-out difference excludes 0;
otherwise the line says there is no measurable change and shows the interval. Switching is
recommended only for a proven image gain that does not come with a proven text loss, of a model
that validation preferred to the base.
"""

from __future__ import annotations

from dataclasses import dataclass

from .eval_report import ModelResult


@dataclass(frozen=True)
class Verdict:
    """The sentence for people and the decision behind it."""

    line: str
    recommend_switch: bool


def _effect(model: ModelResult, metric: str) -> tuple[float, float, float] | None:
    entry = model.differences.get(metric)
    if entry is None:
        return None
    low, high = entry["ci"]
    return 100 * entry["diff"], 100 * low, 100 * high


def _interval(diff: float, low: float, high: float) -> str:
    return f"{diff:+.1f} points [{low:+.1f}, {high:+.1f}]"


def verdict(candidate: ModelResult, image_metric: str, text_metric: str | None, *,
            validation_prefers_base: bool = False) -> Verdict:
    """The verdict for ``candidate`` (after ``compare_to`` against the base) on the held-out set.
    When validation preferred the base, the held-out numbers are still stated, but the advice is
    to keep the base: switching on a held-out gain that validation did not see would be choosing
    on the held-out set."""
    image = _effect(candidate, image_metric)
    if image is None:
        return Verdict(f"No held-out {image_metric} to judge by: keep the model you have.", False)
    diff, low, high = image
    if low > 0:
        image_part, image_better = f"better for image search by {_interval(diff, low, high)} of {image_metric}", True
    elif high < 0:
        image_part, image_better = f"worse for image search by {_interval(diff, low, high)} of {image_metric}", False
    else:
        image_part, image_better = f"no measurable change for image search ({image_metric} {_interval(diff, low, high)})", False
    text_lost = False
    text_part = "text search not measured (no captions)"
    text = _effect(candidate, text_metric) if text_metric else None
    if text is not None:
        t_diff, t_low, t_high = text
        text_lost = t_high < 0
        text_part = f"text search {'lost' if text_lost else 'kept'} ({text_metric} {_interval(t_diff, t_low, t_high)})"
    recommend = image_better and not text_lost and not validation_prefers_base
    advice = "switch" if recommend else "keep the model you have"
    if validation_prefers_base:
        advice += " (validation preferred the base)"
    return Verdict(f"On your held-out labels: {image_part}; {text_part}. Verdict: {advice}.", recommend)
