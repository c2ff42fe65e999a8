"""``clip-model`` measuring commands: ``eval`` (models side by side on the test benchmarks or on
your own images) and ``calibrate-text`` (a model's text score scale)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .adapt_defaults import FOLDER_SPLITS
from .benchmarks import BENCHMARKS, DEFAULT_BENCHMARKS
from .cli_errors import run_or_fail
from .cli_options import from_recipe, out_root_option, recipe_option
from .recipe import load_recipe, resolve

@dataclass(frozen=True)
class EvalSettings:
    """``[eval]`` of a recipe: the flags of ``clip-model eval`` that a recipe may set."""

    models: tuple[str, ...] = ()
    data_root: str | None = None
    benchmarks: tuple[str, ...] = ()
    max_per_class: int | None = None
    device: str = "auto"
    batch_size: int = 64
    runtimes: tuple[str, ...] = ()
    out_dir: str | None = None
    against: str | None = None


@click.command("eval", short_help="Compare models side by side on the standard benchmarks.")
@recipe_option
@click.option("--model", "-m", "models", multiple=True, metavar="SPEC",
              help="Model to evaluate; repeat to compare several side by side.")
@click.option("--data-root", metavar="DIR", help="Folder holding eth80/, caltech101/, flickr8k/, cifar10/ "
              "(default: $CLIP_INGEST_DATA).")
@click.option("--benchmark", "-b", "benchmarks", multiple=True, type=click.Choice(tuple(BENCHMARKS)),
              help="Run only these benchmarks (repeatable; default all but eth80-val, a validation set of ETH-80 objects 1-6).")
@click.option("--max-per-class", type=click.IntRange(min=1), help="Subsample for a quick look (not comparable).")
@click.option("--data", "-d", "folder", metavar="FOLDER", help="Your own labelled images instead of the benchmarks "
              "(label folders or a manifest), split by label as `clip-model adapt` splits them.")
@click.option("--split", "folder_split", type=click.Choice(FOLDER_SPLITS), default="held_out", show_default=True,
              help="With --data: which labels to measure on.")
@click.option("--out", "-o", "out_dir", metavar="DIR", help="Write eval.json and eval.md here.")
@click.option("--device", help="auto, cpu, cuda ...")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per forward pass.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["torch", "onnx", "onnx-int8"]),
              help="Evaluate each model on these runtimes, side by side (repeatable; default torch): "
              "the quality cost of a faster runtime.")
@click.option("--against", metavar="SPEC", help="Show, beside every other column, its difference to this model "
              "with a paired-bootstrap 95 % CI over queries (evaluated first if not among --model).")
@out_root_option
def eval_command(**flags: Any) -> None:
    """Compare models on ETH-80 (instance + category mAP/R@1, unseen objects 7-10),
    Caltech-101 (k-NN and prompt accuracy), Flickr8k (text<->image R@1/5/10) and
    CIFAR-10 (true zero-shot accuracy).

    Prints one Markdown table (metrics in %, one column per model); with --against,
    each other column also shows its difference to that model and the paired-bootstrap
    95 % CI over queries (one seed: the CI covers query sampling, not training noise).
    These are test benchmarks: select models on a validation split, never on these numbers.
    A missing dataset folder is reported and the other benchmarks still run. With --data, the
    models are measured on your own labelled images instead (image mAP/R@1, k-NN, text mAP/R@5
    when captions exist, zero-shot on the label names): by default on the held-out labels of
    `clip-model adapt`'s split. Example: clip-model eval -d ./photos -m starter -m runs/adapt/export --against starter
    """
    from .datasets.common import resolve_data_root
    from .eval_report import compare_to
    from .evaluate import EvalOptions, evaluate_models
    from .tables import render_markdown, write_report
    from .user_eval import evaluate_folder

    recipe = from_recipe(lambda: load_recipe(flags["recipe"]))
    given = {k: flags[k] or None for k in ("data_root", "out_dir", "against", "max_per_class", "device", "batch_size")}
    given.update({k: list(flags[k]) or None for k in ("models", "benchmarks", "runtimes")})
    cfg = from_recipe(lambda: resolve(recipe, "eval", EvalSettings, given, flags["out_root"]))
    models = list(cfg.models)
    if not models:
        raise click.UsageError("name at least one --model (or `models` in the recipe's [eval])")
    if cfg.against and cfg.against not in models:
        models.insert(0, cfg.against)
    options = run_or_fail(lambda: EvalOptions(
        data_root=Path(".") if flags["folder"] else resolve_data_root(cfg.data_root),
        benchmarks=cfg.benchmarks or DEFAULT_BENCHMARKS, max_per_class=cfg.max_per_class, device=cfg.device,
        batch_size=cfg.batch_size, runtimes=cfg.runtimes or ("torch",),
    ))
    if flags["folder"]:
        report = run_or_fail(lambda: evaluate_folder(models, flags["folder"], flags["folder_split"],
                                                     device=options.device, batch_size=options.batch_size))
    else:
        report = run_or_fail(lambda: evaluate_models(models, options))
    if cfg.against:
        compare_to(report, cfg.against)
    click.echo(render_markdown(report), nl=False)
    if cfg.out_dir:
        json_path, md_path = write_report(report, cfg.out_dir)
        click.echo(f"wrote {json_path} and {md_path}")
    if not flags["folder"] and len(report.missing) == len(options.benchmarks):
        raise click.ClickException("no benchmark could run: every dataset folder is missing")


@click.command("calibrate-text", short_help="Measure a model's text score scale, so text queries take --min-relevance.")
@click.option("--model", "-m", "spec", required=True, metavar="SPEC", help="Model to calibrate (a folder is updated in place).")
@click.option("--data", "-d", required=True, metavar="MANIFEST", help="Captioned images to fit on (JSONL: path, captions, label).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fit on the validation split of --data that training held out (seed 0): never on training pairs.")
@click.option("--eval", "eval_data", metavar="MANIFEST", help="Held-out captioned images: report precision and recall there.")
@click.option("--max-images", type=click.IntRange(min=16), default=1000, show_default=True, help="Images drawn (seeded) from each set.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-write", is_flag=True, help="Only cache the calibration; leave a model folder's clip_ingest.json alone.")
def calibrate_text_command(spec: str, data: str, val_fraction: float | None, eval_data: str | None, max_images: int,
                           seed: int, no_write: bool) -> None:
    """Fit the mapping from a text query's raw cosine to a relevance (the probability that an image
    matches the words), so that `clip-search query --text ... --min-relevance 0.5` means the same
    for every model. A caption matches the images of its class (rows with a label) or its own
    image. Each query's scores are standardised against its scores over the images (at search
    time: over the collection), then a monotone (isotonic) fit maps them to a relevance: the
    share of images that matched at that score, at the fit's own share of matches (its base rate;
    a collection where the words match more images gets more precise cuts, one where they match
    fewer less precise ones).

    The result is cached per model id and, for a model folder (an export), written into its
    clip_ingest.json, where every clip-search and serve finds it. Prints a JSON summary with the
    fit and, with --eval, the precision and recall at relevance 0.5 and 0.9.
    """
    from clip_ingest.connectors.factory import METADATA_FILE
    from clip_ingest.connectors.runtime import load_embedder

    from .data import load_samples, split_samples
    from .text_calibration import calibrate_text

    def run() -> dict[str, Any]:
        samples = load_samples(data)
        if val_fraction:
            samples = split_samples(samples, val_fraction)[1]
        folder = Path(spec)
        into = folder if not no_write and folder.is_dir() and (folder / METADATA_FILE).is_file() else None
        return calibrate_text(load_embedder(spec), samples, load_samples(eval_data) if eval_data else None,
                              max_images=max_images, seed=seed, model_folder=into)

    click.echo(json.dumps(run_or_fail(run), indent=2))
