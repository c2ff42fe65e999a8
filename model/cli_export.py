"""``clip-model`` publishing commands: ``export`` (a self-contained model directory),
``update-doc`` (a run's table into a results page or model card) and ``published`` (the
paper authors' checkpoints)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .cli_errors import run_or_fail
from .cli_options import from_recipe, out_root_option, recipe_option
from .recipe import load_recipe, resolve


def _metrics_for(eval_json: str | None, spec: str) -> tuple[dict[str, float] | None, list[dict[str, Any]] | None]:
    """The metrics recorded for ``spec`` in an ``eval.json`` (or of its only model), and the
    other models of that run (``name``, ``spec``, ``model_id``, ``metrics``), for the model card.

    Raises ``click.UsageError`` when the file compares several models and none is ``spec``:
    recording another model's numbers would be worse than recording none.
    """
    if not eval_json:
        return None, None
    models = json.loads(Path(eval_json).read_text(encoding="utf-8"))["models"]
    chosen = next((m for m in models if m["spec"] == spec), models[0] if len(models) == 1 else None)
    if chosen is None:
        specs = ", ".join(m["spec"] for m in models) or "none"
        raise click.UsageError(f"--metrics {eval_json}: no model {spec!r} in it (it has: {specs})")
    others = [{k: m[k] for k in ("name", "spec", "model_id", "metrics")} for m in models if m is not chosen]
    return chosen["metrics"], others


@dataclass(frozen=True)
class ExportSettings:
    """``[export]`` of a recipe: the arguments and flags of ``clip-model export`` that a recipe may set."""

    source: str | None = None
    out_dir: str | None = None
    name: str | None = None
    fp16: bool = False
    onnx: bool = False
    metrics: str | None = None
    experiment: str | None = None


def _experiment_table(experiment_file: str | None) -> str | None:
    """The text of the ``--experiment`` file (or the recipe's ``experiment``), if any."""
    if experiment_file and not Path(experiment_file).is_file():
        raise click.UsageError(f"--experiment {experiment_file}: no such file (run `clip-model experiment` first)")
    return Path(experiment_file).read_text(encoding="utf-8") if experiment_file else None


@click.command(short_help="Write a stage directory or model spec as a self-contained model directory.")
@click.argument("source", required=False, metavar="[SPEC]")
@click.argument("out_dir", required=False, metavar="[OUT_DIR]")
@recipe_option
@click.option("--name", help="Model name recorded in clip_ingest.json and hashed into model_id.")
@click.option("--fp16/--fp32", default=None, help="Store half-precision weights (smaller; a different model_id).")
@click.option("--onnx/--no-onnx", default=None, help="Also write ONNX towers for OnnxEmbedder.")
@click.option("--metrics", "metrics_file", metavar="EVAL.json",
              help="Record SPEC's metrics of this eval.json; the model card shows them beside the run's other models.")
@click.option("--experiment", "experiment_file", metavar="EXPERIMENT.md",
              help="Show this `clip-model experiment` table in the model card.")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty OUT_DIR.")
@out_root_option
def export(**flags: Any) -> None:
    """Write SPEC (a stage directory or any model spec) as a self-contained model directory.

    The directory is open_clip's local-dir layout (config + safetensors, never a pickle)
    plus clip_ingest.json (base model, recipe, data, metrics, model_id) and MODEL_CARD.md (the
    same facts for people, its tables refreshable with `clip-model update-doc`); use it as
    `--model OUT_DIR` everywhere.

    \b
    Example, after `bash model/recipes/photo-ssl-mcip.sh`:
      clip-model export --recipe photo-ssl-mcip --experiment runs/photo-ssl-mcip/v2/experiment.md
    """
    from .export import export_model

    recipe = from_recipe(lambda: load_recipe(flags["recipe"]))
    given = {k: flags[k] for k in ("source", "out_dir", "name", "fp16", "onnx")}
    given.update(metrics=flags["metrics_file"], experiment=flags["experiment_file"])
    cfg = from_recipe(lambda: resolve(recipe, "export", ExportSettings, given, flags["out_root"]))
    if not cfg.source or not cfg.out_dir:
        raise click.UsageError("give SPEC and OUT_DIR (or `source` and `out_dir` in the recipe's [export])")
    metrics, compared_with = _metrics_for(cfg.metrics, cfg.source)
    experiment = _experiment_table(cfg.experiment)
    result = run_or_fail(lambda: export_model(
        cfg.source, cfg.out_dir, name=cfg.name,
        recipe={"file": flags["recipe"], **recipe} if recipe else None,
        metrics=metrics, compared_with=compared_with, experiment=experiment,
        fp16=cfg.fp16, onnx=cfg.onnx, overwrite=flags["overwrite"],
    ))
    click.echo(f"exported {result.path} (model_id {result.model_id})")


@click.command("update-doc", short_help="Put a table a run wrote into a results page or model card, between its markers.")
@click.argument("doc", type=click.Path(exists=True, dir_okay=False))
@click.argument("block")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
def update_doc(doc: str, block: str, table: str) -> None:
    """Replace block BLOCK of DOC with the text of TABLE (experiment.md, eval.md).

    \b
    DOC marks the block with two comment lines, which Markdown does not show:
      <!-- clip-model:BLOCK -->
      <!-- /clip-model:BLOCK -->
    Everything outside them is kept byte for byte, so the numbers a document shows are the ones
    the run wrote. Example, after `bash model/recipes/photo-ssl-mcip.sh`:
      clip-model update-doc docs/results/photo-ssl-mcip.md photo-ssl-mcip-v4 runs/photo-ssl-mcip/v4/experiment.md
    Missing or repeated markers are an error (exit 1) and leave DOC untouched.
    """
    from .doc_blocks import replace_block

    changed = run_or_fail(lambda: replace_block(doc, block, table))
    click.echo(f"{doc}: block {block} {'updated from' if changed else 'already equals'} {table}")


@click.command()
@click.argument("alias", required=False)
@click.option("--cache-dir", metavar="DIR", help="Where converted checkpoints live (default: $CLIP_INGEST_CACHE).")
@click.option("--url", help="Download from here instead of the table (URL or local .pth).")
def published(alias: str | None, cache_dir: str | None, url: str | None) -> None:
    """Download and convert a published MCIP checkpoint once; print its model directory.

    Without ALIAS, list the known checkpoints. The printed directory is a model spec.
    """
    from .published import PUBLISHED, fetch_published

    if not alias:
        for name, entry in PUBLISHED.items():
            flag = "" if entry.verified else "  [URL to be verified]"
            click.echo(f"{name}: {entry.arch} from {entry.base_tag} - {entry.description}{flag}")
        return
    click.echo(run_or_fail(lambda: fetch_published(alias, cache_dir=cache_dir, url=url)))
