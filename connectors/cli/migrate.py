"""``clip-ingest migrate``: move a collection to another model while it keeps answering queries.

See :mod:`clip_ingest.connectors.ingest.migration` for the design. Exit codes as ``clip-ingest``:
0 done, 1 fatal, 2 usage, 3 switched but some files failed (dead-letter file), 4 another run holds
the collection's lock.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from ..config import Settings, register_command
from ..ingest.lock import LockedError, RunLock, default_lock_path
from ..ingest.migration import AlreadyMigrated, ModelOf, prepare, rollback_target, state, switch
from ..ingest.plan import Shard
from ..search.duplicates import carry_reviews
from ..targets import is_artifact
from ..ingest.scan import normalise_extensions
from .common import (EXIT_FAILED_FILES, EXIT_LOCKED, EXIT_OK, fatal, load_settings, load_settings_embedder, open_target_store,
                     setup_logging, store_target)
from .ingest import INGEST_SETTINGS, parse_index_fields, run, source_options, split_commas

log = logging.getLogger("clip_ingest.migrate")

#: a migration embeds the same sources as the cron job: the [ingest] table, then [migrate]
MIGRATE = register_command("migrate", INGEST_SETTINGS, inherits=("ingest",))


@click.command("migrate", context_settings={"help_option_names": ["-h", "--help"]})
@source_options
@click.option("--status", "show_status", is_flag=True, help="Print where the collection points and which model versions exist (JSON).")
@click.option("--no-switch", is_flag=True, help="Build (or catch up) the new model's collection but leave the name where it points.")
@click.option("--rollback", is_flag=True, help="Point the name back at the previous version (kept until dropped).")
@click.option("--to", "to", default=None, metavar="COLLECTION", help="With --rollback: the version to point at, when there are several.")
@click.option("--drop", "drop", default=None, metavar="COLLECTION", help="Delete an old version (never the one the name points to).")
def migrate(verbose: int, quiet: bool, show_status: bool, no_switch: bool, rollback: bool, to: str | None, drop: str | None,
            **params: Any) -> None:
    """Move --collection to --model without downtime: build, catch up, switch, keep the old one.

    The new model's vectors go into a collection of their own beside the live one, named
    COLLECTION__<model hash>, from the same SOURCES and --manifest files as the cron job, with the
    same incremental pipeline: interrupted, it resumes; run again, it catches up. Then, holding
    the collection's run lock (cron runs wait or skip), a last pass takes in what changed meanwhile
    and --collection becomes an alias of the new collection in one atomic step (Qdrant and Milvus
    aliases; a symbolic link for Qdrant Edge). Queries through the name never fail and never mix
    models: clip-search, serve and the adapters follow the alias and check the model behind it.
    The first migration of a collection turns its name into an alias (renamed, or copied on
    Qdrant: no model runs), so --collection stays the name every client uses.

    Afterwards: update the cron job's --model; --rollback points the name back; --drop COLLECTION
    deletes an old version for good. A folder named "migrate" as the first source of a plain
    ingestion must be written ./migrate.
    """
    setup_logging(verbose, quiet)
    params["ext"] = split_commas(params["ext"])
    settings = load_settings(params, MIGRATE)
    if is_artifact(settings.target):
        raise click.UsageError("a Parquet artifact has no aliases: migrate a Qdrant or Milvus collection")
    actions = sum(map(bool, (show_status, rollback, drop)))
    if actions > 1:
        raise click.UsageError("give one of --status, --rollback, --drop")
    if to and not rollback:
        raise click.UsageError("--to goes with --rollback")
    if actions:
        sys.exit(_manage(settings, show_status, rollback, to, drop))
    if not settings.sources and not settings.manifest:
        raise click.UsageError("give the folders / --manifest files of the collection, as its cron job does")
    if not normalise_extensions(settings.ext):
        raise click.UsageError("--ext: no extension given")
    sys.exit(_migrate(settings, parse_index_fields(settings.index_field), switch_after=not no_switch))


def _model_of(settings: Settings) -> ModelOf:
    target = store_target(settings)
    return ModelOf(lambda name: open_target_store(target, name))


def _manage(settings: Settings, show_status: bool, rollback: bool, to: str | None, drop: str | None) -> int:
    from ..backends.base import StoreError

    target = store_target(settings)
    try:
        with RunLock(_live_lock(settings), timeout=settings.lock_timeout):
            with open_target_store(target, settings.collection) as store:
                current = state(store, _model_of(settings))
                if show_status:
                    click.echo(json.dumps(current.to_dict(), indent=2, sort_keys=True))
                elif rollback:
                    back = rollback_target(current, to)
                    switch(store, back)
                    log.info("%r points to %s again (model %s)", settings.collection, back, current.versions[back])
                else:
                    if drop not in current.versions:
                        raise StoreError(f"{drop!r} is not a version of {settings.collection!r}: {', '.join(current.versions) or 'none'}")
                    store.drop_collection(drop)
                    log.info("dropped %s", drop)
    except LockedError as exc:
        fatal(str(exc), EXIT_LOCKED)
    except StoreError as exc:
        fatal(str(exc))
    return EXIT_OK


def _live_lock(settings: Settings) -> str:
    """The run lock of the name clients use: the one the cron job's ``clip-ingest`` takes."""
    target = store_target(settings)
    return settings.lock_file if settings.get("lock_file") else default_lock_path(target.target, target.location, settings.collection)


def _carry_reviews(target: Any, live: str, physical: str) -> int:
    """Copy near-duplicate review decisions into the new collection; -1 when the live one cannot be
    read now (an embedded Qdrant Edge collection open in a serving process)."""
    from ..backends.base import StoreError

    try:
        with open_target_store(target, live) as store, open_target_store(target, physical) as built:
            return carry_reviews(store, built)
    except StoreError as exc:
        log.warning("review decisions not carried over (%s); they stay in the old version", exc)
        return -1


def _migrate(settings: Settings, index_fields: dict[str, str], *, switch_after: bool) -> int:
    from ..backends.base import StoreError
    from ..model_spec import ModelLoadError

    target = store_target(settings)
    try:
        embedder = load_settings_embedder(settings, settings.model, settings.batch_size)
    except ModelLoadError as exc:
        fatal(str(exc))
    try:
        with RunLock(_live_lock(settings), timeout=settings.lock_timeout):  # adoption renames the live collection
            with open_target_store(target, settings.collection) as store:
                physical = prepare(store, embedder.model_id)
    except AlreadyMigrated as exc:
        click.echo(f"{exc}: nothing to do")
        return EXIT_OK
    except LockedError as exc:
        fatal(str(exc), EXIT_LOCKED)
    except StoreError as exc:
        fatal(str(exc))
    build = settings.replace(collection=physical, id_namespace=settings.collection, prune=True, recreate=False,
                             dry_run=False, lock_file=None)
    log.info("building %s with model %s (the name keeps serving the old one)", physical, embedder.model_id)
    code = run(build, Shard.parse("0/1"), index_fields, embedder=embedder)
    if not switch_after:
        log.info("built %s; run again without --no-switch to catch up and switch", physical)
        return code
    try:
        with RunLock(_live_lock(settings), timeout=settings.lock_timeout):  # no cron run between catch-up and switch
            log.info("catching up with what changed during the build")
            code = run(build, Shard.parse("0/1"), index_fields, embedder=embedder)
            carried = _carry_reviews(target, settings.collection, physical)
            with open_target_store(target, settings.collection) as store:
                before = switch(store, physical)
    except LockedError as exc:
        fatal(f"{exc} (the new collection is built; run migrate again to catch up and switch)", EXIT_LOCKED)
    except StoreError as exc:
        fatal(str(exc))
    log.info("%r now points to %s (model %s; before: %s; %d review decisions carried over). Update the cron job's "
             "--model; `clip-ingest migrate --rollback` points it back", settings.collection, physical, embedder.model_id,
             before, carried)
    return EXIT_FAILED_FILES if code == EXIT_FAILED_FILES else EXIT_OK


__all__ = ["migrate"]
