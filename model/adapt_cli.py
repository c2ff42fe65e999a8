"""``clip-model adapt``: the guided run of :mod:`clip_ingest.model.adapt` as a command."""

from __future__ import annotations

from typing import Any

import click

from .adapt_defaults import (DEFAULT_HELD_OUT_FRACTION, DEFAULT_TEXT_TOLERANCE, DEFAULT_VAL_FRACTION,
                             DEFAULT_WISE_FT_ALPHAS)
from .cli_errors import run_or_fail


@click.command(short_help="Your labelled photos -> a model judged on your own held-out labels, in one run.")
@click.argument("folder", metavar="FOLDER")
@click.option("--base", "-m", metavar="SPEC",
              help="Model to start from (any model spec; a folder path needs no ./) [default: the bundled starter].")
@click.option("--out", "-o", "out_dir", default="runs/adapt", show_default=True, metavar="DIR",
              help="Work folder: split manifests, stages (resumable), adapt.md/json, export/.")
@click.option("--name", help="Name of the exported model (default: <base>-<folder name>).")
@click.option("--lr", "lrs", multiple=True, type=click.FloatRange(min=0, min_open=True),
              help="Learning rates to try (repeatable; default: two, scaled to the base's size).")
@click.option("--epochs", type=click.IntRange(min=1), help="Most epochs per run (default: by data size).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per step (default: by data size).")
@click.option("--caption-pool", metavar="FILE", help="Captions to mine pseudo-captions from (.txt or manifest) "
              "when your images have none: enables MCIP and realignment.")
@click.option("--realign/--no-realign", default=True, show_default=True, help="Realign the text tower when captions exist.")
@click.option("--held-out-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_HELD_OUT_FRACTION, show_default=True, help="Share of labels held out to judge the result.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_VAL_FRACTION, show_default=True, help="Share of labels that choose lr, epoch and method.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the split by label.")
@click.option("--text-tolerance", type=click.FloatRange(min=0), default=DEFAULT_TEXT_TOLERANCE, show_default=True,
              help="Validation text score a model may lose against the base (text guard).")
@click.option("--wise-ft/--no-wise-ft", default=True, show_default=True,
              help="Interpolate the image tower back towards the base where validation prefers it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU with mixed precision if present), cpu, cuda...")
@click.option("--export/--no-export", default=True, show_default=True, help="Write OUT/export for clip-ingest migrate.")
def adapt(folder: str, **flags: Any) -> None:
    """Adapt a model to FOLDER (one sub-folder of images per label, optional IMAGE.txt captions;
    or a CSV/JSONL manifest) and judge it on labels it never trained on.

    \b
    Splits the labels into training, validation and held-out; measures the base on the
    held-out labels; fine-tunes (2SFT, plus MCIP and realignment when captions exist or can
    be mined) over a small learning-rate grid; picks lr, epoch and method on validation; and
    ends with a held-out table with 95 % CIs, a verdict and the migrate command. Rerunning
    continues where it stopped. Example:
      clip-model adapt ./photos --base starter --out runs/adapt
    """
    from .adapt import AdaptConfig, run_adapt  # torch and open_clip: loaded when the command runs, not for --help

    wise = DEFAULT_WISE_FT_ALPHAS if flags.pop("wise_ft") else ()
    base = {"base": flags["base"]} if flags["base"] else {}
    cfg = AdaptConfig(
        folder, **base, out_dir=flags["out_dir"], name=flags["name"],
        held_out_fraction=flags["held_out_fraction"], val_fraction=flags["val_fraction"], split_seed=flags["split_seed"],
        lrs=tuple(flags["lrs"]), epochs=flags["epochs"], batch_size=flags["batch_size"],
        caption_pool=flags["caption_pool"], realign=flags["realign"], text_guard_tolerance=flags["text_tolerance"],
        wise_ft_alphas=wise, seed=flags["seed"], device=flags["device"], export=flags["export"],
    )
    run_or_fail(lambda: run_adapt(cfg, echo=click.echo))
