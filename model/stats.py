"""Paired statistics for model comparisons: means over seeds and bootstrap confidence intervals.

Two models evaluated on the same benchmark give one value per query each (an AP, a hit, a
correct classification: :data:`clip_ingest.model.evaluate.PerQuery`). The effect of a method
is the mean over queries of ``method - base``; with several training seeds the method's value
per query is first averaged over seeds. Its uncertainty comes from a *paired* bootstrap over
queries (the same resampled queries for both models, so the variation between queries that
both share cancels), the usual test for retrieval metrics (Sakai, 2006; Smucker et al., 2007).
The spread over seeds is reported beside it (min-max), so training noise stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Difference:
    """A method's mean minus the base's, with a paired-bootstrap CI (fractions, not %)."""

    mean: float
    low: float
    high: float
    seed_values: tuple[float, ...]
    """The method's own metric for each seed."""

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    method_runs: Sequence[np.ndarray],
    base: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Difference:
    """The mean per-query difference between ``method_runs`` (one array per seed, averaged) and
    ``base`` (same queries, same order), with its percentile bootstrap CI at ``confidence``."""
    if not method_runs:
        raise ValueError("need at least one run of the method")
    runs = np.stack([np.asarray(r, dtype=np.float64) for r in method_runs])
    base = np.asarray(base, dtype=np.float64)
    if runs.shape[1:] != base.shape or base.ndim != 1 or base.size == 0:
        raise ValueError(f"every run needs one value per base query ({base.shape}), got {runs.shape[1:]}")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be in (0, 1) and resamples >= 1")
    diff = runs.mean(axis=0) - base
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for i in range(resamples):
        means[i] = diff[rng.integers(0, diff.size, diff.size)].mean()
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), tuple(float(r.mean()) for r in runs))


def format_difference(value: float, diff: float, low: float, high: float) -> str:
    """One table cell in %: ``value (diff [low, high])``, the difference bold where its CI
    excludes 0, e.g. ``67.3 (**+10.4** [+9.8, +11.1])`` (arguments are fractions)."""
    mark = "**" if low > 0 or high < 0 else ""
    return f"{100 * value:.1f} ({mark}{100 * diff:+.1f}{mark} [{100 * low:+.1f}, {100 * high:+.1f}])"
