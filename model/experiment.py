"""The paper's experiment, reproduced with seeds and confidence intervals: ``clip-model experiment``.

For every seed of ``[experiment] seeds`` the four rows of Schall et al. (SISAP 2024) are trained
from the same base model, each stage configured by the recipe's ``[finetune]`` / ``[realign]``
tables (so every setting lives in one file) and written to ``{out_root}/seed<S>/<row>``:

=================  ===========================================================================
row                stages
=================  ===========================================================================
``2sft-stage1``    ``finetune --method retrieval`` (ArcMargin on the labels)
``2sft``           ``2sft-stage1`` + ``realign`` (text tower back to the frozen image space)
``mcip``           ``finetune --method mcip`` (ArcMargin + MC-ArcMargin on the captions)
``mcip-realign``   ``mcip`` + ``realign``
=================  ===========================================================================

Then the random initialisation of the base's architecture, the base and every trained model
are evaluated on the same benchmarks in one run (:mod:`clip_ingest.model.evaluate`; a realigned
row reuses its parent's image vectors, as its image tower is the parent's), and the
table gives, per metric, each row's mean over seeds with the paired-bootstrap 95 % CI of its
difference to the base (:mod:`clip_ingest.model.stats`; rendered by
:func:`clip_ingest.model.tables.render_experiment`). Finished stages are not trained again
(their checkpoints resume after the last epoch), so an interrupted experiment is re-run safely.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .evaluate import EvalOptions, evaluate_models
from .stats import paired_bootstrap

log = logging.getLogger(__name__)

ROWS: tuple[tuple[str, str, str | None], ...] = (
    ("2sft-stage1", "retrieval", None),
    ("2sft", "realign", "2sft-stage1"),
    ("mcip", "mcip", None),
    ("mcip-realign", "realign", "mcip"),
)
"""(row, what trains it, the row it starts from: None = the base model)."""


@dataclass
class ExperimentConfig:
    """``[experiment]``: the base model, its random initialisation, the seeds and the benchmarks."""

    base: str
    random_init: str
    out_dir: str
    seeds: tuple[int, ...] = (0, 1, 2)
    rows: tuple[str, ...] = tuple(r for r, _, _ in ROWS)
    benchmarks: tuple[str, ...] = ("eth80", "caltech101", "flickr8k", "cifar10")
    confidence: float = 0.95
    row_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Settings of one row's own stage over the recipe's ``[finetune]`` / ``[realign]`` table,
    e.g. ``[experiment.row_settings.mcip] train = {lr = 3e-4}``: a method whose setting was
    chosen on validation apart from the others. A row that starts from another (``mcip-realign``
    from ``mcip``) inherits its parent's weights, not its settings."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.row_settings) - {r for r, _, _ in ROWS})
        if unknown:
            raise ValueError(f"row_settings for unknown row(s) {unknown}; rows: {', '.join(r for r, _, _ in ROWS)}")


def row_dir(out_dir: str | Path, seed: int, row: str) -> Path:
    return Path(out_dir) / f"seed{seed}" / row


def train_rows(cfg: ExperimentConfig, train_stage: Callable[[str, dict[str, Any]], None]) -> dict[str, float]:
    """Train every (seed, row) in order; ``train_stage(stage, overrides)`` runs one stage
    (``finetune`` or ``realign``) with ``model``, ``out_dir``, ``method`` and the seed set."""
    seconds: dict[str, float] = {}
    for seed in cfg.seeds:
        for row, kind, parent in ROWS:
            if row not in cfg.rows:
                continue
            model = cfg.base if parent is None else str(row_dir(cfg.out_dir, seed, parent))
            settings = cfg.row_settings.get(row, {})
            overrides: dict[str, Any] = {**settings, "model": model, "out_dir": str(row_dir(cfg.out_dir, seed, row)),
                                         "train": {**settings.get("train", {}), "seed": seed}}
            stage = "realign" if kind == "realign" else "finetune"
            if stage == "finetune":
                overrides["method"] = kind
            started = time.perf_counter()
            log.info("experiment: seed %d, %s (%s from %s)", seed, row, stage, model)
            train_stage(stage, overrides)
            seconds[f"seed{seed}/{row}"] = time.perf_counter() - started
    return seconds


def build_table(cfg: ExperimentConfig, options: EvalOptions) -> dict[str, Any]:
    """Evaluate random init, base and every trained model; per metric: each column's value (mean
    over seeds for the rows) and each row's paired-bootstrap difference to the base."""
    specs = [cfg.random_init, cfg.base] + [
        str(row_dir(cfg.out_dir, s, r)) for r in cfg.rows for s in cfg.seeds
    ]
    report = evaluate_models(specs, options)
    by_spec = {m.spec: m for m in report.models}
    base = by_spec[cfg.base]
    metrics = [k for k in base.metrics if all(k in m.metrics for m in report.models)]
    table: dict[str, Any] = {"metrics": metrics, "random_init": by_spec[cfg.random_init].metrics,
                             "base": base.metrics, "rows": {}, "missing": report.missing,
                             "model_ids": {m.spec: m.model_id for m in report.models},
                             "row_settings": cfg.row_settings}
    for row in cfg.rows:
        runs = [by_spec[str(row_dir(cfg.out_dir, s, row))] for s in cfg.seeds]
        table["rows"][row] = {}
        for metric in metrics:
            diff = paired_bootstrap([r.per_query[metric] for r in runs], base.per_query[metric],
                                    confidence=cfg.confidence)
            table["rows"][row][metric] = {
                "mean": float(sum(diff.seed_values) / len(diff.seed_values)), "seeds": list(diff.seed_values),
                "diff": diff.mean, "ci": [diff.low, diff.high],
            }
    return table
