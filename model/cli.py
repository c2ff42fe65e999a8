"""``clip-model``: train, evaluate and export retrieval-optimised CLIP encoders.

Every command reads its settings from a *recipe* (a TOML file, or the name of one
shipped in ``clip_ingest/model/recipes/``) and lets flags override them. A recipe
has one table per command (``[pretrain]``, ``[finetune]``, ``[realign]``,
``[mine-captions]``, ``[eval]``, ``[export]``), ``[stages]`` with defaults shared by the
three training stages, and ``[recipe]`` with its ``name`` and ``out_root``; ``{out_root}`` in any string is replaced by it, and ``$VARS`` / ``~``
are expanded, so one ``--out-root`` moves a whole chain of stages.

Exit codes: 0 success, 1 failure (bad data, model, missing files...), 2 usage error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import click

from .adapt_cli import adapt
from .cli_errors import require_torch, run_or_fail
from .adapt_defaults import FOLDER_SPLITS

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
STAGES = ("pretrain", "finetune", "realign")


# --- recipes ---------------------------------------------------------------------------------


def load_recipe(recipe: str | None) -> dict[str, Any]:
    """A recipe file (path) or shipped recipe (name) as a dict; ``{}`` when ``recipe`` is None."""
    if not recipe:
        return {}
    path = Path(recipe).expanduser()
    if not path.is_file():
        path = RECIPE_DIR / f"{recipe}.toml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.toml")))
        raise click.BadParameter(f"no recipe file {recipe!r} and no shipped recipe of that name ({shipped})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}") from exc


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``("train.epochs=2", "templates=['a {label}']")`` -> a nested dict (values read as TOML, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides`` (nested tables merged, ``None`` values ignored)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _expand(value: Any, out_root: str) -> Any:
    if isinstance(value, str):
        return os.path.expanduser(os.path.expandvars(value.replace("{out_root}", out_root)))
    if isinstance(value, list):
        return [_expand(v, out_root) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, out_root) for k, v in value.items()}
    return value


def out_root_of(recipe: dict[str, Any], flag: str | None) -> str:
    """``--out-root``, else the recipe's ``[recipe] out_root``, else ``runs/<recipe name>``."""
    meta = recipe.get("recipe", {})
    return str(flag or meta.get("out_root") or f"runs/{meta.get('name', 'clip-model')}")


def section(recipe: dict[str, Any], name: str, overrides: dict[str, Any], out_root: str | None) -> dict[str, Any]:
    """The ``[name]`` table of ``recipe`` with ``overrides`` applied and placeholders expanded.

    For the training stages, the recipe's ``[stages]`` table gives shared defaults and
    ``out_dir`` defaults to ``{out_root}/<stage>``.
    """
    base = recipe.get(name, {})
    if name in STAGES:
        base = merge(merge({"out_dir": f"{{out_root}}/{name}"}, recipe.get("stages", {})), base)
    return _expand(merge(base, overrides), out_root_of(recipe, out_root))


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` with nested dataclass fields built from tables and lists made tuples.

    An unknown key or a missing required one is a usage error naming the valid keys.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise click.UsageError(f"[{where}]: unknown setting(s) {unknown}; valid: {', '.join(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = fields[key].default_factory if fields[key].default_factory is not dataclasses.MISSING else None
        nested = default() if default else None
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            value = build_dataclass(type(nested), value, f"{where}.{key}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise click.UsageError(f"[{where}]: missing required setting(s) {missing} (in the recipe or as flags)")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a setting the config itself rejects
        raise click.UsageError(f"[{where}]: {exc}") from exc


# --- commands --------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Shipped recipes: " + ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))) + ".",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress (loss, learning rate, images/s).")
def cli(verbose: bool) -> None:
    """Train, evaluate and export retrieval-optimised CLIP encoders.

    \b
    Typical chain (each stage's output directory is a model spec for the next):
      clip-model finetune --recipe eth80-mcip            # image tower: ArcMargin (+ captions)
      clip-model realign  --recipe eth80-mcip            # text tower back to the new image space
      clip-model eval     --recipe eth80-mcip            # one comparison table (Markdown + JSON)
      clip-model export   --recipe eth80-mcip --onnx     # what `clip-ingest --model DIR` loads

    Settings come from a recipe (a TOML file or a shipped name, listed below) and flags
    override them. Training is seeded and resumable: rerunning a
    stage continues after its last finished epoch. `clip-model COMMAND --help` documents
    each command.

    \b
    Exit codes: 0 ok, 1 failure (bad data, model or files, torch not installed), 2 usage error.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    require_torch()


recipe_option = click.option(
    "--recipe", "-r", metavar="FILE|NAME", help="Recipe TOML file, or the name of a shipped recipe."
)
out_root_option = click.option(
    "--out-root", metavar="DIR", help="Replaces {out_root} in the recipe (default: [recipe] out_root)."
)
set_option = click.option(
    "--set", "set_items", multiple=True, metavar="KEY=VALUE",
    help="Override any recipe setting, e.g. --set train.warmup_steps=0 --set templates=['a {label}'].",
)


def stage_options(fn: Callable) -> Callable:
    """The options every training stage shares (all override the recipe)."""
    options = [
        recipe_option,
        click.option("--model", "-m", metavar="SPEC", help="Model to start from: architecture, ARCH:weights, or a directory."),
        click.option("--data", "-d", metavar="PATH", help="Class-per-folder image tree or a CSV/JSONL manifest."),
        click.option("--out", "-o", "out_dir", metavar="DIR", help="Output model directory (and its resumable checkpoint)."),
        out_root_option,
        click.option("--epochs", type=click.IntRange(min=1), help="Passes over the data."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Images per optimiser step."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Backbone learning rate."),
        click.option("--seed", type=int, help="Seed for weights of loss heads, shuffling and augmentation."),
        click.option("--device", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1 ..."),
        click.option("--resume/--no-resume", default=None, help="Continue from the stage's checkpoint (default: yes)."),
        set_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _stage_overrides(flags: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    train = {k: flags.get(k) for k in ("epochs", "batch_size", "lr", "seed", "device", "resume")}
    plain = {"model": flags.get("model"), "data": flags.get("data"), "out_dir": flags.get("out_dir"), **(extra or {})}
    return merge(merge(plain, {"train": train}), parse_set(flags.get("set_items", ())))


def _train(recipe: dict[str, Any], stage: str, overrides: dict[str, Any], out_root: str | None) -> Any:
    """Build the ``stage`` config from ``recipe`` + ``overrides`` and run it (expected failures exit 1)."""
    from . import stages

    cls, entry = {
        "pretrain": (stages.PretrainConfig, stages.run_pretrain),
        "finetune": (stages.FinetuneConfig, stages.run_finetune),
        "realign": (stages.RealignConfig, stages.run_realign),
    }[stage]
    cfg = build_dataclass(cls, section(recipe, stage, overrides, out_root), stage)
    return run_or_fail(lambda: entry(cfg))


def _run_stage(stage: str, flags: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    recipe = load_recipe(flags.get("recipe"))
    result = _train(recipe, stage, _stage_overrides(flags, extra), flags.get("out_root"))
    fit = result.fit
    resumed = f", resumed after epoch {fit.resumed_from_epoch}" if fit.resumed_from_epoch else ""
    click.echo(
        f"{stage}: wrote {result.model_dir} ({fit.epochs} epochs, {fit.steps} steps, "
        f"final loss {fit.final_loss:.4f}, {fit.skipped} images skipped{resumed})"
    )


@cli.command()
@stage_options
def pretrain(**flags: Any) -> None:
    """Contrastive training of both towers on image-caption pairs.

    Captions come from a manifest, from `mine-captions`, or from `templates` over
    class names. Starts from random weights (an architecture) or any checkpoint.
    """
    _run_stage("pretrain", flags)


@cli.command()
@click.option("--method", type=click.Choice(["retrieval", "mcip"]), help="retrieval: ArcMargin on labels; "
              "mcip: 0.75 ArcMargin + 0.25 multi-caption ArcMargin (needs captions).")
@stage_options
def finetune(method: str | None, **flags: Any) -> None:
    """Fine-tune the image tower (and its projection) for image retrieval.

    Labels are the class folders (or the manifest's `label`). Follow with `realign` so
    that text queries find the new image vectors.
    """
    _run_stage("finetune", flags, {"method": method})


@cli.command()
@stage_options
def realign(**flags: Any) -> None:
    """Realign the text tower to a fine-tuned, frozen image tower.

    Trains the last text blocks, final norm, projection and temperature against cached
    image embeddings: text->image search works again, image vectors are unchanged.
    """
    _run_stage("realign", flags)


@cli.command("mine-captions")
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

    recipe = load_recipe(flags.pop("recipe"))
    out_root, set_items = flags.pop("out_root"), flags.pop("set_items")
    values = section(recipe, "mine-captions", merge(flags, parse_set(set_items)), out_root)
    cfg = build_dataclass(MineConfig, values, "mine-captions")
    result = run_or_fail(lambda: run_mine_captions(cfg))
    click.echo(
        f"mine-captions: wrote {result.output} ({result.with_captions}/{result.images} images captioned "
        f"from a pool of {result.pool_size}, {result.skipped} skipped)"
    )


@cli.command("eval", short_help="Compare models side by side on the standard benchmarks.")
@recipe_option
@click.option("--model", "-m", "models", multiple=True, metavar="SPEC",
              help="Model to evaluate; repeat to compare several side by side.")
@click.option("--data-root", metavar="DIR", help="Folder holding eth80/, caltech101/, flickr8k/, cifar10/ "
              "(default: $CLIP_INGEST_DATA).")
@click.option("--benchmark", "-b", "benchmarks", multiple=True, type=click.Choice(["eth80", "caltech101", "flickr8k", "cifar10", "eth80-val"]),
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
    from .evaluate import DEFAULT_BENCHMARKS, EvalOptions, compare_to, evaluate_models, render_markdown, resolve_data_root, write_report
    from .user_eval import evaluate_folder

    recipe = load_recipe(flags["recipe"])
    given = {k: flags[k] or None for k in ("data_root", "out_dir", "against")}
    given.update({k: list(flags[k]) or None for k in ("models", "benchmarks")})
    cfg = section(recipe, "eval", given, flags["out_root"])
    models = list(cfg.get("models") or [])
    if not models:
        raise click.UsageError("name at least one --model (or `models` in the recipe's [eval])")
    against = cfg.get("against")
    if against and against not in models:
        models.insert(0, against)
    options = run_or_fail(lambda: EvalOptions(
        data_root=Path(".") if flags["folder"] else resolve_data_root(cfg.get("data_root")),
        benchmarks=tuple(cfg.get("benchmarks") or DEFAULT_BENCHMARKS),
        max_per_class=flags["max_per_class"] or cfg.get("max_per_class"),
        device=flags["device"] or cfg.get("device", "auto"),
        batch_size=flags["batch_size"] or cfg.get("batch_size", 64),
        runtimes=tuple(flags["runtimes"] or cfg.get("runtimes") or ("torch",)),
    ))
    if flags["folder"]:
        report = run_or_fail(lambda: evaluate_folder(models, flags["folder"], flags["folder_split"],
                                                     device=options.device, batch_size=options.batch_size))
    else:
        report = run_or_fail(lambda: evaluate_models(models, options))
    if against:
        compare_to(report, against)
    click.echo(render_markdown(report), nl=False)
    if cfg.get("out_dir"):
        json_path, md_path = write_report(report, cfg["out_dir"])
        click.echo(f"wrote {json_path} and {md_path}")
    if not flags["folder"] and len(report.missing) == len(options.benchmarks):
        raise click.ClickException("no benchmark could run: every dataset folder is missing")


@cli.command(short_help="Train the paper's four rows over several seeds and tabulate them with CIs.")
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
    from .evaluate import EvalOptions, resolve_data_root
    from .experiment import ExperimentConfig, build_table, render_table, train_rows, write_table

    loaded = load_recipe(recipe)
    values = _expand(merge(loaded.get("experiment", {}), parse_set(set_items)), out_root_of(loaded, out_root))
    cfg = build_dataclass(ExperimentConfig, values, "experiment")
    seconds: dict[str, float] = {}
    if not eval_only:
        seconds = train_rows(cfg, lambda stage, overrides: _train(loaded, stage, overrides, out_root))
    options = run_or_fail(lambda: EvalOptions(data_root=resolve_data_root(data_root), benchmarks=cfg.benchmarks))
    table = run_or_fail(lambda: build_table(cfg, options))
    markdown = render_table(table, cfg)
    click.echo(markdown, nl=False)
    json_path, md_path = write_table(table, markdown, cfg.out_dir, seconds)
    click.echo(f"wrote {json_path} and {md_path}")


def _object_range(text: str) -> tuple[int, ...]:
    """``"1-6"`` or ``"1,2,5"`` -> object numbers."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-", 1))
            return tuple(range(first, last + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"expected a range like 1-6 or a list like 1,2,5, got {text!r}") from exc


@cli.command("calibrate-text", short_help="Measure a model's text score scale, so text queries take --min-relevance.")
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


@cli.command()
@click.argument("source", type=click.Choice(["eth80", "caltech101", "flickr8k_train", "flickr8k", "openclipart", "emoji"]))
@click.option("--output", "-o", required=True, metavar="FILE.jsonl", help="Manifest to write.")
@click.option("--data-root", metavar="DIR", help="Folder holding eth80/ and caltech101/ (default: $CLIP_INGEST_DATA).")
@click.option("--objects", default="1-6", show_default=True, help="ETH-80 objects to include (7-10 are evaluated).")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]), help="Caltech-101 split.")
@click.option("--max-side", type=click.IntRange(16), default=None, metavar="PX",
              help="Write copies at most PX on a side to --image-dir and list those (decoded once, not every epoch).")
@click.option("--image-dir", default=None, metavar="DIR",
              help="Where --max-side copies (and emoji drawings) go; files already there are reused.")
def manifest(source: str, output: str, data_root: str | None, objects: str, split: str,
             max_side: int | None, image_dir: str | None) -> None:
    """Write a training manifest (JSONL: path, label, captions) for a known data set.

    The file appears only when complete (written under a temporary name, then renamed), so
    "the manifest exists" means "the manifest is whole" to a script that re-runs.

    \b
    eth80           objects 1-6, label = object, caption = "a photo of a <category>"
    caltech101      the train split, label = class, captions = varied phrasings of the class
    flickr8k_train  5,830 photos with 5 human captions each (research use: never ship a
                    model trained on it)
    flickr8k        the 1,000-image evaluation set with its captions: for measuring only
                    (e.g. calibrate-text --eval), never for training
    openclipart     Debian's openclipart-png/-svg, captions from the SVG title and keywords
    emoji           Debian's fonts-noto-color-emoji drawn into --image-dir, captions from the
                    names in unicode-data's emoji-test.txt (label = subgroup)
    """
    from . import sources
    from .data import write_jsonl
    from .evaluate import eth80_rows, resolve_data_root

    def rows() -> Any:
        if source == "openclipart":
            return sources.openclipart_rows()
        if source == "emoji":
            return sources.emoji_rows(Path(image_dir))
        root = resolve_data_root(data_root)
        if source == "eth80":
            return eth80_rows(root, _object_range(objects))
        if source in ("flickr8k_train", "flickr8k"):
            return sources.flickr8k_rows(root / source)
        return sources.caltech101_rows(root / "caltech101", split)

    if source == "emoji" and image_dir is None:
        raise click.UsageError("emoji needs --image-dir: the folder its drawings go to")
    if source != "emoji" and (max_side is None) != (image_dir is None):
        raise click.UsageError("--max-side and --image-dir go together")

    def listed() -> Any:
        return rows() if max_side is None else sources.shrunk_rows(rows(), Path(image_dir), max_side)

    count = run_or_fail(lambda: write_jsonl(listed(), output))
    if not count:
        raise click.ClickException(f"{source}: no images found, nothing written")
    click.echo(f"manifest: wrote {count} rows to {output}")


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


@cli.command(short_help="Write a stage directory or model spec as a self-contained model directory.")
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

    recipe = load_recipe(flags["recipe"])
    cfg = section(recipe, "export", {k: flags[k] for k in ("source", "out_dir", "name", "fp16", "onnx")}, flags["out_root"])
    if not cfg.get("source") or not cfg.get("out_dir"):
        raise click.UsageError("give SPEC and OUT_DIR (or `source` and `out_dir` in the recipe's [export])")
    metrics, compared_with = _metrics_for(flags["metrics_file"] or cfg.get("metrics"), cfg["source"])
    experiment_file = flags["experiment_file"] or cfg.get("experiment")
    if experiment_file and not Path(experiment_file).is_file():
        raise click.UsageError(f"--experiment {experiment_file}: no such file (run `clip-model experiment` first)")
    experiment = Path(experiment_file).read_text(encoding="utf-8") if experiment_file else None
    result = run_or_fail(lambda: export_model(
        cfg["source"], cfg["out_dir"], name=cfg.get("name"),
        recipe={"file": flags["recipe"], **recipe} if recipe else None,
        metrics=metrics, compared_with=compared_with, experiment=experiment,
        fp16=bool(cfg.get("fp16")), onnx=bool(cfg.get("onnx")), overwrite=flags["overwrite"],
    ))
    click.echo(f"exported {result.path} (model_id {result.model_id})")


@cli.command("update-doc", short_help="Put a table a run wrote into a results page or model card, between its markers.")
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


@cli.command()
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


cli.add_command(adapt)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``clip-model`` script."""
    cli.main(args=argv, prog_name="clip-model")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
