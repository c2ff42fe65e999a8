"""The Markdown tables of ``clip-model eval`` and ``clip-model experiment`` and the files they
write: what ``clip-model update-doc`` puts into ``docs/results/`` and model cards.

Rendering only: the numbers come from :mod:`clip_ingest.model.evaluate` and
:mod:`clip_ingest.model.experiment`. Values are shown in %, one decimal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .eval_report import EvalReport, ModelResult
from .stats import format_difference


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(model: ModelResult, metric: str) -> str:
    if metric not in model.metrics:
        return "-"
    if metric in model.differences:
        entry = model.differences[metric]
        return format_difference(model.metrics[metric], entry["diff"], *entry["ci"])
    return _pct(model.metrics[metric])


def render_markdown(report: EvalReport) -> str:
    """One row per metric, one column per model (values in %), missing datasets listed below;
    after :func:`~clip_ingest.model.eval_report.compare_to`, each other column also shows its
    difference to that column and the CI."""
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


def render_experiment(table: dict[str, Any], seeds: Sequence[int], confidence: float) -> str:
    """Markdown of an experiment table: one line per metric; rows as mean over ``seeds``, with
    the difference to the base and its CI."""
    rows = list(table["rows"])
    head = "| metric | random init | base | " + " | ".join(rows) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(rows)]
    for metric in table["metrics"]:
        cells = []
        for row in rows:
            entry = table["rows"][row][metric]
            cells.append(format_difference(entry["mean"], entry["diff"], *entry["ci"]))
        lines.append(f"| {metric} | {_pct(table['random_init'][metric])} | {_pct(table['base'][metric])} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Rows: mean over seeds {list(seeds)}; in brackets the difference to the base and its "
                 f"paired-bootstrap {int(confidence * 100)} % CI over queries (bold: the CI excludes 0). "
                 "Values in %.")
    for row, settings in table.get("row_settings", {}).items():
        lines.append(f"`{row}` trains with its own settings over the recipe's: {_flat(settings)}.")
    return "\n".join(lines) + "\n"


def _flat(settings: dict[str, Any], prefix: str = "") -> str:
    """``{"train": {"lr": 3e-4}, "k": 1}`` -> ``"train.lr = 0.0003, k = 1"``."""
    return ", ".join(
        _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else f"{prefix}{key} = {value}"
        for key, value in settings.items()
    )


def write_experiment(table: dict[str, Any], markdown: str, out_dir: str | Path,
                     seconds: dict[str, float]) -> tuple[Path, Path]:
    """Write experiment.json / .md; without ``seconds`` (``--eval-only``) the training times of
    the run that trained the rows are kept."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "experiment.json", out / "experiment.md"
    if not seconds and json_path.is_file():
        seconds = json.loads(json_path.read_text(encoding="utf-8")).get("stage_seconds", {})
    json_path.write_text(json.dumps({**table, "stage_seconds": seconds}, indent=2), encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path
