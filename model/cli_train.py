"""``clip-model`` training commands: ``pretrain``, ``finetune``, ``realign``, ``mine-captions``
and ``experiment``. Each resolves its recipe table (:mod:`clip_ingest.model.recipe`) and calls
one entry function; torch is imported only when a command runs."""

from __future__ import annotations

from typing import Any

import click

from .cli_errors import run_or_fail
from .cli_options import from_recipe, given, out_root_option, recipe_option, set_option, stage_options
from .loss_factory import describe, losses_for
from .recipe import load_recipe, merge, parse_set, resolve


def _stage_flags(flags: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    train = given(flags, "epochs", "batch_size", "lr", "seed", "device", "resume")
    plain = {**given(flags, "model", "data", "out_dir"), **(extra or {})}
    return merge(merge(plain, {"train": train}), parse_set(flags.get("set_items", ())))


def train_stage(recipe: dict[str, Any], stage: str, flags: dict[str, Any], out_root: str | None) -> Any:
    """Build the ``stage`` config from ``recipe`` + ``flags`` and run it (expected failures exit 1)."""
    from . import stages

    cls, entry = {
        "pretrain": (stages.PretrainConfig, stages.run_pretrain),
        "finetune": (stages.FinetuneConfig, stages.run_finetune),
        "realign": (stages.RealignConfig, stages.run_realign),
    }[stage]
    cfg = from_recipe(lambda: resolve(recipe, stage, cls, flags, out_root))
    return run_or_fail(lambda: entry(cfg))


def _run_stage(stage: str, flags: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    recipe = from_recipe(lambda: load_recipe(flags.get("recipe")))
    overrides = from_recipe(lambda: _stage_flags(flags, extra))
    result = train_stage(recipe, stage, overrides, flags.get("out_root"))
    fit = result.fit
    resumed = f", resumed after epoch {fit.resumed_from_epoch}" if fit.resumed_from_epoch else ""
    click.echo(
        f"{stage}: wrote {result.model_dir} ({fit.epochs} epochs, {fit.steps} steps, "
        f"final loss {fit.final_loss:.4f}, {fit.skipped} images skipped{resumed})"
    )


@click.command()
@stage_options
def pretrain(**flags: Any) -> None:
    """Contrastive training of both towers on image-caption pairs.

    Captions come from a manifest, from `mine-captions`, or from `templates` over
    class names. Starts from random weights (an architecture) or any checkpoint.
    """
    _run_stage("pretrain", flags)


@click.command()
@click.option("--method", type=click.Choice(losses_for("finetune")), help=describe("finetune"))
@stage_options
def finetune(method: str | None, **flags: Any) -> None:
    """Fine-tune the image tower (and its projection) for image retrieval.

    Labels are the class folders (or the manifest's `label`). Follow with `realign` so
    that text queries find the new image vectors.
    """
    _run_stage("finetune", flags, {"method": method})


@click.command()
@stage_options
def realign(**flags: Any) -> None:
    """Realign the text tower to a fine-tuned, frozen image tower.

    Trains the last text blocks, final norm, projection and temperature against cached
    image embeddings: text->image search works again, image vectors are unchanged.
    """
    _run_stage("realign", flags)


@click.command("mine-captions")
@recipe_option
@click.option("--model", "-m", metavar="SPEC", help="Model that embeds images and pool captions.")
@click.option("--data", "-d", metavar="PATH", help="Images to caption: folder tree or manifest.")
@click.option("--pool", metavar="PATH", help="Caption pool: a .txt (one per line) or a manifest with captions.")
@click.option("--output", metavar="FILE.jsonl", help="Manifest to write (images + mined captions).")
@click.option("--k", type=click.IntRange(min=1), help="Captions kept per image (paper: 20).")
@click.option("--threshold", type=float, help="Minimum cosine similarity (paper: 0.27).")
@out_root_option
@set_option
def mine_captions(**flags: Any) -> None:
    """Give every image the pool captions most similar to it (pseudo-captions for mcip/realign)."""
    from .mining import MineConfig, run_mine_captions

    recipe = from_recipe(lambda: load_recipe(flags.pop("recipe")))
    out_root, set_items = flags.pop("out_root"), flags.pop("set_items")
    cfg = from_recipe(lambda: resolve(recipe, "mine-captions", MineConfig, merge(flags, parse_set(set_items)), out_root))
    result = run_or_fail(lambda: run_mine_captions(cfg))
    click.echo(
        f"mine-captions: wrote {result.output} ({result.with_captions}/{result.images} images captioned "
        f"from a pool of {result.pool_size}, {result.skipped} skipped)"
    )


@click.command(short_help="Train the paper's four rows over several seeds and tabulate them with CIs.")
@recipe_option
@out_root_option
@click.option("--data-root", metavar="DIR", help="Benchmark data (default: $CLIP_INGEST_DATA).")
@click.option("--eval-only", is_flag=True, help="Skip training: evaluate the rows already trained.")
@set_option
def experiment(recipe: str | None, out_root: str | None, data_root: str | None, eval_only: bool,
               set_items: tuple[str, ...]) -> None:
    """2SFT stage 1, 2SFT, MCIP and MCIP + realignment from one base, for every seed of the
    recipe's [experiment] table, then one evaluation of random init, base and all rows.

    \b
    Stages take their settings from the recipe's [finetune] and [realign] tables; outputs go
    to [experiment] out_dir/seed<S>/<row>; finished stages are not trained again. The table
    (experiment.md/.json) gives each row's mean over seeds and the paired-bootstrap 95 % CI of
    its difference to the base. Example: clip-model experiment --recipe photo-ssl-mcip
    """
    from .datasets.common import resolve_data_root
    from .evaluate import EvalOptions
    from .experiment import ExperimentConfig, build_table, train_rows
    from .tables import render_experiment, write_experiment

    loaded = from_recipe(lambda: load_recipe(recipe))
    cfg = from_recipe(lambda: resolve(loaded, "experiment", ExperimentConfig, parse_set(set_items), out_root))
    seconds: dict[str, float] = {}
    if not eval_only:
        seconds = train_rows(cfg, lambda stage, overrides: train_stage(loaded, stage, overrides, out_root))
    options = run_or_fail(lambda: EvalOptions(data_root=resolve_data_root(data_root), benchmarks=cfg.benchmarks))
    table = run_or_fail(lambda: build_table(cfg, options))
    markdown = render_experiment(table, cfg.seeds, cfg.confidence)
    click.echo(markdown, nl=False)
    json_path, md_path = write_experiment(table, markdown, cfg.out_dir, seconds)
    click.echo(f"wrote {json_path} and {md_path}")
