"""What an evaluation produces: one column per model with per-query values, and the paired
comparison of the columns (rendered by :mod:`clip_ingest.model.tables`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .stats import paired_bootstrap

PerQuery = dict[str, np.ndarray]
"""Metric name -> one value per query (AP, hit, correct...); the metric is their mean, and paired
statistics (:mod:`clip_ingest.model.stats`) resample them."""


@dataclass
class ModelResult:
    """One model's column of the table (``per_query`` kept in memory for paired statistics,
    never written to eval.json)."""

    spec: str
    name: str
    model_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: PerQuery = field(default_factory=dict, repr=False)
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


def means(per_query: PerQuery) -> dict[str, float]:
    """Each metric's value: the mean of its per-query values."""
    return {name: float(values.mean()) for name, values in per_query.items()}


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
