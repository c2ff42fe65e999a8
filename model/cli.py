"""``clip-model``: train, evaluate and export retrieval-optimised CLIP encoders.

Every command reads its settings from a *recipe* (a TOML file, or the name of one shipped in
``clip_ingest/model/recipes/``; :mod:`clip_ingest.model.recipe`) and lets flags override them.
The commands live by job: training in :mod:`.cli_train`, measuring in :mod:`.cli_eval`,
manifests in :mod:`.cli_data`, publishing in :mod:`.cli_export`, ``adapt`` in :mod:`.adapt_cli`.

Exit codes: 0 success, 1 failure (bad data, model, missing files...), 2 usage error.
"""

from __future__ import annotations

import logging
import sys

import click

from .adapt_cli import adapt
from .cli_data import manifest
from .cli_errors import require_torch
from .cli_eval import calibrate_text_command, eval_command
from .cli_export import export, published, update_doc
from .cli_train import experiment, finetune, mine_captions, pretrain, realign
from .recipe import shipped_recipes


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Shipped recipes: " + ", ".join(shipped_recipes()) + ".",
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


for command in (pretrain, finetune, realign, mine_captions, eval_command, experiment, calibrate_text_command, manifest,
                export, update_doc, published, adapt):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``clip-model`` script."""
    cli.main(args=argv, prog_name="clip-model")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
