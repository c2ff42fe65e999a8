"""What the ``clip-model`` commands share: the recipe options and how a recipe error becomes a
usage error (exit code 2)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from .recipe import RecipeError, RecipeParameterError

T = TypeVar("T")

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


def from_recipe(action: Callable[[], T]) -> T:
    """Run ``action`` (reading a recipe); a bad recipe name, file or ``--set`` item is a bad
    parameter, a bad setting a usage error (both exit 2)."""
    try:
        return action()
    except RecipeParameterError as exc:
        raise click.BadParameter(str(exc)) from exc
    except RecipeError as exc:
        raise click.UsageError(str(exc)) from exc


def given(flags: dict[str, Any], *names: str) -> dict[str, Any]:
    """The ``names`` of ``flags`` (``None``: not given)."""
    return {name: flags.get(name) for name in names}
