"""Paired bootstrap: planted effects are found, no effect is not, and inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest

from clip_ingest.model.stats import paired_bootstrap


def test_a_planted_improvement_has_a_ci_above_zero_and_the_right_mean():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 500)
    runs = [np.clip(base + 0.1 + rng.normal(0, 0.05, 500), 0, 2) for _ in range(3)]
    diff = paired_bootstrap(runs, base)
    assert diff.mean == pytest.approx(0.1, abs=0.01)
    assert diff.low > 0.08 and diff.high < 0.12 and diff.excludes_zero
    assert len(diff.seed_values) == 3


def test_pairing_removes_the_spread_between_queries():
    """Queries of very different difficulty, the same small gain on each: an unpaired test would
    drown it; the paired CI is tight around it."""
    base = np.linspace(0, 1, 300)
    diff = paired_bootstrap([base + 0.01], base)
    assert diff.low == pytest.approx(0.01) and diff.high == pytest.approx(0.01)


def test_no_effect_gives_a_ci_that_contains_zero():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 400)
    diff = paired_bootstrap([base + rng.normal(0, 0.1, 400)], base)
    assert diff.low < 0 < diff.high and not diff.excludes_zero


def test_inputs_are_checked():
    with pytest.raises(ValueError):
        paired_bootstrap([], np.zeros(3))
    with pytest.raises(ValueError, match="one value per base query"):
        paired_bootstrap([np.zeros(4)], np.zeros(3))
