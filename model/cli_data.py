"""``clip-model manifest``: a training manifest of a known data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .cli_errors import run_or_fail


def _object_range(text: str) -> tuple[int, ...]:
    """``"1-6"`` or ``"1,2,5"`` -> object numbers."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-", 1))
            return tuple(range(first, last + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"expected a range like 1-6 or a list like 1,2,5, got {text!r}") from exc


@click.command()
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
    from .datasets.caltech import caltech101_rows
    from .datasets.common import resolve_data_root
    from .datasets.eth80 import eth80_rows
    from .datasets.flickr import flickr8k_rows

    def rows() -> Any:
        if source == "openclipart":
            return sources.openclipart_rows()
        if source == "emoji":
            return sources.emoji_rows(Path(image_dir))
        root = resolve_data_root(data_root)
        if source == "eth80":
            return eth80_rows(root, _object_range(objects))
        if source in ("flickr8k_train", "flickr8k"):
            return flickr8k_rows(root / source)
        return caltech101_rows(root, split)

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
