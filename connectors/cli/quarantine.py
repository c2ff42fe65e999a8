"""``clip-ingest quarantine``: acknowledge files that will never decode, so they stop failing runs.

The logic (matching by size and mtime_ns, the file's format) is :mod:`..ingest.quarantine`; this
command only finds the configured collection's files and edits its quarantine file. It opens no
store and loads no model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from ..ingest.deadletter import RunFiles, read_dead_letter
from ..ingest.plan import Shard
from ..ingest.quarantine import Quarantine, QuarantineError, acknowledge, add, entries_from_dead_letter, release, stored_path
from .common import EXIT_USAGE, common_options, fatal, load_settings, setting_option, store_target
from .ingest import DEAD_LETTER, INGEST, SHARD


@click.command("quarantine", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@common_options
@click.option("--failed", "take_failed", is_flag=True,
              help="Quarantine every file of the current dead-letter file (the last run's failures).")
@click.option("--release", "release_paths", is_flag=True, help="Forget PATHS: the next run reads them again.")
@setting_option(replace(SHARD, help="With --failed: that shard worker's dead-letter file", default_text="unsharded",
                        show_default=True))
@setting_option(replace(DEAD_LETTER, help="With --failed: the dead-letter file, when runs are given one",
                        default_text="as clip-ingest's"))
def quarantine(paths: tuple[str, ...], take_failed: bool, release_paths: bool, **params: Any) -> None:
    """Acknowledge image files that will never decode (a truncated JPEG, say): later runs skip
    them without reading them while their size and modification time stay the same, so they stop
    making every run exit 3. They are counted as `quarantined` in the run summary and listed by
    `clip-ingest status`; a quarantined file that changes (replaced by a good copy) is read again.

    \b
      clip-ingest quarantine PATH...            acknowledge these files
      clip-ingest quarantine --failed           acknowledge every file of the last run's dead letters
      clip-ingest quarantine --release PATH...  forget them: the next run reads them again
      clip-ingest quarantine                    list the quarantined files

    The quarantine file is DATA_DIR/dead-letter/TARGET-COLLECTION.quarantine.jsonl (one per target
    and collection, given by the same options and config as clip-ingest). Only local files can be
    quarantined. Exit codes: 0 done; 2 usage (a path that is missing or not a regular local file,
    --failed with no dead letters, --release without paths).
    """
    settings = load_settings(params, INGEST)
    try:
        shard = Shard.parse(settings.shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    files = RunFiles.of(settings.data_dir, store_target(settings).target, settings.collection, shard.label, settings.dead_letter)
    try:
        if release_paths:
            if take_failed or not paths:
                raise click.UsageError("--release takes the PATHS to forget (and no --failed)")
            _release(files.quarantine, paths)
        elif paths or take_failed:
            _acknowledge(files, paths, take_failed)
        else:
            _list(files.quarantine)
    except QuarantineError as exc:
        fatal(str(exc), EXIT_USAGE)


def _acknowledge(files: RunFiles, paths: tuple[str, ...], take_failed: bool) -> None:
    try:
        dead = {r["path"]: r for r in read_dead_letter(files.dead_letter)}
    except FileNotFoundError:
        dead = {}
    if take_failed and not dead:
        raise click.UsageError(f"--failed: no dead letters in {files.dead_letter}")
    entries, refused = entries_from_dead_letter(dead.values()) if take_failed else ([], [])
    for given in paths:  # with the dead letter's reason when the last run recorded one
        path = stored_path(given)
        record = dead.get(path, {})
        entries.append(acknowledge(path, record.get("reason", ""), record.get("detail", "")))
    for why in refused:
        click.echo(f"not quarantined: {why}", err=True)
    for entry in add(files.quarantine, entries):
        click.echo(f"quarantined: {entry.path} ({entry.size} bytes{', ' + entry.reason if entry.reason else ''})")
    click.echo(f"{len(entries)} file(s) acknowledged in {files.quarantine}; runs skip them while they stay unchanged")


def _release(quarantine_file: str, paths: tuple[str, ...]) -> None:
    wanted = [stored_path(p) for p in paths]
    released = set(release(quarantine_file, wanted))
    for path in wanted:
        click.echo(f"{'released' if path in released else 'not quarantined'}: {path}")


def _list(quarantine_file: str) -> None:
    entries = sorted(Quarantine.load(quarantine_file).entries.values(), key=lambda e: e.path)
    for entry in entries:
        changed = " (changed since: the next run reads it again)" if entry.changed_on_disk() else ""
        click.echo(f"{entry.path}: {entry.reason or 'acknowledged'}, since {entry.time}{changed}")
    click.echo(f"{len(entries)} file(s) quarantined ({quarantine_file})")


__all__ = ["quarantine"]
