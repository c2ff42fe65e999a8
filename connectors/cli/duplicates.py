"""``clip-search duplicates`` and ``clip-search review``: near-duplicate groups and decisions on them.

Exit codes: 0 done, 1 fatal (store, model), 2 usage.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..config import Setting, Settings, register_command
from ..search.duplicates import CANDIDATE_MIN_RELEVANCE, DEFAULT_MIN_RELEVANCE, default_min_relevance, same_photo_check
from .common import EXIT_OK, common_options, fatal, load_query_embedder, load_settings, open_target_store, setting_option, setup_logging, store_target

log = logging.getLogger("clip_ingest.duplicates")

BATCH_SIZE = Setting("batch_size", int, 32, minimum=1, help="Model batch size for the calibration")
DUPLICATES_SETTINGS: tuple[Setting, ...] = (BATCH_SIZE,)
DUPLICATES = register_command("duplicates", DUPLICATES_SETTINGS)
REVIEW = register_command("review", ())


def _grouping_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--similar, --min-relevance, --threshold and -k: where groups are cut (a group id holds for these only)."""
    for option in reversed((
        click.option("--similar", is_flag=True,
                     help="List look-alikes (other shots, other views of one thing) by the embedding alone, "
                          "instead of edits of one photo (the default: the embedding, then a pixel check)."),
        click.option("--min-relevance", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                     help=f"Calibrated cut of the embedding step (the same for every model) [default: {CANDIDATE_MIN_RELEVANCE} "
                          f"for duplicates, whose pixel check decides; {DEFAULT_MIN_RELEVANCE} with --similar]."),
        click.option("--threshold", type=click.FloatRange(-1, 1), default=None, help="A raw cosine similarity instead (model-dependent)."),
        click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Neighbours looked at per image."),
    )):
        command = option(command)
    return command


@click.command("duplicates", context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@_grouping_options
@click.option("--include-resolved", is_flag=True, help="Also list groups that a review resolved.")
@click.option("--limit", type=click.IntRange(1), default=None, help="List at most this many groups (largest first) [default: all].")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many groups first (with --limit: page by page).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True), default=None, help="Also write an HTML page of the groups.")
@setting_option(BATCH_SIZE)
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def duplicates(similar: bool, min_relevance: float | None, threshold: float | None, k: int, include_resolved: bool,
               limit: int | None, offset: int, as_json: bool, html_file: str | None, verbose: int, quiet: bool,
               **params: Any) -> None:
    """List groups of near-duplicate images (edits of one photo: crops, re-encodes, resizes,
    colour changes, flips, borders) of a collection; with --similar, groups of look-alikes.

    Exact copies are already one point. Each image's nearest neighbours come from the database's
    own k-NN, so memory stays small at any size; then each candidate pair's pixels are compared
    (the images are read from their stored paths: a pair whose file is gone is not claimed). An
    embedding puts "the same kind of thing" as close as "the same photo"; the pixel check is what
    keeps the listing to real duplicates (docs/duplicates.md has the figures). --min-relevance is
    calibrated per model: the first use measures the model's score scale on edited copies of up
    to 64 of the collection's images and caches it. Groups come largest first; each has an id.
    Decide on a group with `clip-search review` (by its id, with the same options, or by its
    members): a resolved group is not listed again unless a new image joins it.
    """
    setup_logging(verbose, quiet)
    settings = load_settings(params, DUPLICATES)
    from ..backends.base import StoreError
    from ..model_spec import ModelLoadError
    from ..search.duplicates import find_groups, page_of

    tier = _tier(similar)
    check = same_photo_check(tier)
    try:
        with open_target_store(store_target(settings), settings.collection) as store:
            raw, calibration = _cut(settings, store, min_relevance, threshold, tier)
            found = find_groups(store, raw, k=k, include_resolved=include_resolved, same_photo=check)
    except (StoreError, ModelLoadError, ValueError) as exc:
        fatal(str(exc))
    unreadable = 0 if check is None else check.unreadable
    if unreadable:
        log.warning("%d candidate pair(s) were not checked and are not listed: an image could not be read "
                    "(moved or deleted since the last ingest? run clip-ingest again)", unreadable)
    page = page_of(found, limit=len(found) if limit is None else limit, offset=offset)
    groups = page.groups
    document = {"collection": settings.collection, "tier": tier, "threshold": raw,
                "min_relevance": None if threshold is not None else _relevance(min_relevance, tier),
                "k": k, "calibration": None if calibration is None else calibration.__dict__,
                "total_groups": page.total_groups, "total_members": page.total_members, "offset": offset,
                "unreadable_pairs": unreadable,
                "groups": [g.to_dict() for g in groups]}
    if html_file:
        _write_html(html_file, settings.collection, groups, calibration)
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        for group in groups:
            click.echo(f"group {group.id}  {len(group.members)} images  best {group.best_score:.4f}"
                       + (f"  [{group.review['decision']}]" if group.review else ""))
            for point in group.members:
                click.echo(f"  {point.id}  {point.payload.get('path')}")
        shown = f"groups {offset + 1}-{offset + len(groups)} of " if len(groups) < page.total_groups else ""
        how = "" if check is None else ", same photo by the pixel check"
        click.echo(f"{shown}{page.total_groups} group(s), {page.total_members} images, at cosine >= {raw:.4f}{how}")
    sys.exit(EXIT_OK)


def _tier(similar: bool) -> str:
    return "similar" if similar else "duplicates"


def _relevance(min_relevance: float | None, tier: str) -> float:
    """``min_relevance`` as given, else the tier's default."""
    return default_min_relevance(tier) if min_relevance is None else min_relevance


def _cut(settings: Settings, store: Any, min_relevance: float | None, threshold: float | None,
         tier: str) -> tuple[float, Any]:
    """``(raw cosine, calibration or None)``: ``threshold`` itself, else the calibrated cut of
    ``min_relevance`` (default: the tier's)."""
    if threshold is not None:
        return threshold, None
    from ..calibration import cosine_for

    calibration = _calibration(settings, store)
    return cosine_for(calibration, _relevance(min_relevance, tier)), calibration


def _calibration(settings: Settings, store: Any):
    """The collection model's calibration: cached, or measured now on some of its images."""
    from ..calibration import collection_calibration, load_calibration

    embedder = load_query_embedder(settings, store)
    stored = store.collection_model()
    if stored is not None and stored[0] != embedder.model_id:
        raise ValueError(f"the collection was built with {stored[0]!r}, not {embedder.model_id!r}: pass its --model")
    if load_calibration(embedder.model_id) is None:
        log.info("calibrating %s on the collection's images (once per model)", embedder.model_id)
    return collection_calibration(embedder, store)


def _write_html(path: str, collection: str, groups: list, calibration: Any) -> None:
    from ..backends.base import Hit
    from ..search.html import render_groups_html

    sections = []
    for group in groups:
        label = f"group {group.id} ({len(group.members)} images" + (f", {group.review['decision']}" if group.review else "") + ")"
        score = calibration.relevance(group.best_score) if calibration is not None else group.best_score
        sections.append((label, [Hit(p.id, score, p.payload) for p in group.members]))
    Path(path).write_text(render_groups_html(f"Near-duplicates in {collection}", sections), encoding="utf-8")


@click.command("review", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("members", nargs=-1)
@common_options
@click.option("--group", "group", default=None, metavar="GROUP_ID",
              help="The group's id as `clip-search duplicates` lists it (at the same cut and -k), instead of MEMBERS.")
@_grouping_options
@click.option("--decision", type=click.Choice(["keep-all", "not-duplicates", "keep-one"]), required=True,
              help="keep-all: duplicates, all kept; not-duplicates: a false alarm; keep-one: duplicates, --keep is the one to keep.")
@click.option("--keep", default=None, metavar="ID", help="With keep-one: the member to keep.")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def review(members: tuple[str, ...], group: str | None, similar: bool, min_relevance: float | None, threshold: float | None,
           k: int, decision: str, keep: str | None, verbose: int, quiet: bool, **params: Any) -> None:
    """Record a decision on the group made of MEMBERS (point ids) or named by --group.

    A group id names the members `clip-search duplicates` listed with the same --similar,
    --min-relevance (or --threshold) and -k; the groups are found again to look it up, and an id that no group has
    now (the group changed) is an error, exit 1. The decision is stored in each member's payload
    (field duplicate_review): it survives re-runs, moves and `clip-ingest migrate`. clip-ingest
    deletes no file.
    """
    setup_logging(verbose, quiet)
    if bool(members) == (group is not None):
        raise click.UsageError("give the group's MEMBERS or --group, not both")
    settings = load_settings(params, REVIEW)
    from ..backends.base import StoreError
    from ..model_spec import ModelLoadError
    from ..search.duplicates import find_groups, group_by_id, record_review
    from ..search.searcher import PointNotFoundError

    try:
        with open_target_store(store_target(settings), settings.collection) as store:
            chosen = list(members)
            if group is not None:
                raw, _ = _cut(settings, store, min_relevance, threshold, _tier(similar))
                found = find_groups(store, raw, k=k, include_resolved=True, same_photo=same_photo_check(_tier(similar)))
                chosen = group_by_id(found, group).member_ids
            written = record_review(store, chosen, decision, keep)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except (StoreError, ModelLoadError, PointNotFoundError) as exc:
        fatal(str(exc))
    click.echo(json.dumps(written))
    sys.exit(EXIT_OK)


__all__ = ["duplicates", "review"]
