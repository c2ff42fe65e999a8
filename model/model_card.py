"""The model card an export writes beside its weights: ``MODEL_CARD.md``.

Every fact in it comes from the export's own ``clip_ingest.json`` (what the model is, how it was
trained and selected, what was measured), so the card cannot drift from the model it describes.
Its two tables are generated blocks (:mod:`~clip_ingest.model.doc_blocks` markers), which
``clip-model update-doc`` refreshes after a later run without touching the rest:

- ``metrics``: the numbers of the ``clip-model eval`` run given to ``export --metrics``, this
  model beside every other model of that run (the random initialisation, the base), as the
  project reports every number;
- ``experiment``: the table of ``clip-model experiment`` (``export --experiment``), the paper's
  rows with seeds and confidence intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .doc_blocks import markers

CARD_NAME = "MODEL_CARD.md"
METRICS_BLOCK = "metrics"
EXPERIMENT_BLOCK = "experiment"


def _block(name: str, content: str) -> list[str]:
    start, end = markers(name)
    return [start, content.rstrip("\n"), end]


def _flat_scores(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"eth80": {"mAP": 0.5}}`` -> ``{"eth80 mAP": 0.5}``; non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_scores(value, f"{name} "))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def metrics_table(metadata: Mapping[str, Any]) -> str:
    """This model's recorded metrics (%), after the columns of the models measured in the same run
    (``compared_with``)."""
    own = _flat_scores(metadata.get("metrics") or {})
    if not own:
        return ("*Not evaluated.* Record a run's numbers with `clip-model export SPEC OUT --metrics "
                "eval.json`, from a `clip-model eval` of this model beside its random initialisation.\n")
    others = [(m["name"], _flat_scores(m["metrics"])) for m in metadata.get("compared_with", [])]
    columns = [*others, (f"**{metadata.get('name', 'this model')}**", own)]
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for metric in own:
        cells = [f"{100 * scores[metric]:.1f}" if metric in scores else "-" for _, scores in columns]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- `{m['name']}`: `{m['spec']}` (model_id `{m['model_id']}`)" for m in metadata.get("compared_with", [])]
    lines.append("- Values in %, all columns from one `clip-model eval` run.")
    return "\n".join(lines) + "\n"


def _training_lines(metadata: Mapping[str, Any]) -> list[str]:
    lines = []
    if metadata.get("stage"):
        lines.append(f"- **Stage**: `{metadata['stage']}` from `{metadata.get('base_model')}`.")
    if metadata.get("data"):
        counts = ", ".join(f"{metadata[k]} {label}" for k, label in
                           (("train_images", "training images"), ("val_images", "validation images")) if k in metadata)
        lines.append(f"- **Data**: `{metadata['data']}`" + (f" ({counts})." if counts else "."))
    recipe = metadata.get("recipe")
    if isinstance(recipe, Mapping) and recipe.get("file"):
        lines.append(f"- **Recipe**: `{recipe['file']}` (all its settings are in `clip_ingest.json`).")
    fit = metadata.get("fit") or {}
    if fit.get("steps"):
        resumed = fit.get("resumed_from_epoch") or 0
        timed = f"epochs {resumed + 1}-{fit.get('epochs')} (resumed after epoch {resumed}) took" if resumed else "took"
        lines.append(
            f"- **Training**: {fit['steps']} steps, {fit.get('epochs')} epochs; {timed} "
            f"{fit.get('seconds', 0) / 60:.0f} min at {fit.get('samples_per_s', 0):.0f} samples/s."
        )
    scores = fit.get("val_scores") or []
    if scores:
        curve = ", ".join(f"{s:.3f}" for s in scores)
        best = fit.get("best_epoch")
        lines.append(f"- **Model selection** on the validation split, score per epoch: {curve}; kept: "
                     f"epoch {best}." if best else f"- **Validation score per epoch**: {curve}.")
    return lines


def render_model_card(metadata: Mapping[str, Any], experiment: str | None = None) -> str:
    """``MODEL_CARD.md`` for an export whose ``clip_ingest.json`` is ``metadata``.

    Args:
        metadata: the export's ``clip_ingest.json`` content.
        experiment: the text of an ``experiment.md`` to show, else a placeholder saying how to
            add one.
    """
    name = metadata.get("name", "model")
    lines = [
        f"# {name}",
        "",
        f"- **model_id**: `{metadata.get('model_id')}` (a collection remembers it and refuses vectors "
        "of any other model).",
        f"- **Exported from** `{metadata.get('source')}`, weights in {metadata.get('weights_dtype', 'float32')}"
        + (", with ONNX towers" if metadata.get("onnx") else "") + ".",
        "- **Use it**: `--model <this folder>` in `clip-ingest` / `clip-search` / `clip-model eval`, "
        "`OpenClipEmbedder(\"<this folder>\")`, or open_clip's `local-dir:<this folder>`.",
        *_training_lines(metadata),
        "",
        "## Evaluation",
        "",
        *_block(METRICS_BLOCK, metrics_table(metadata)),
        "",
        "## Experiment",
        "",
        *_block(EXPERIMENT_BLOCK, experiment or (
            f"*No experiment table.* Add one with `clip-model update-doc <this folder>/{CARD_NAME} "
            f"{EXPERIMENT_BLOCK} experiment.md` after `clip-model experiment`.\n")),
        "",
    ]
    return "\n".join(lines)
