"""``clip-ingest status``: a collection's state and its last run, without starting a server.

What it reads: the collection (point count, the model id and spec it records, aliases), and the
files every run leaves under ``DATA_DIR/dead-letter/`` (the last run's summary, the dead letters,
the quarantine). It never creates a store: an embedded store whose folder or file does not exist
is reported missing without being opened. An embedded store that another process holds open
(``clip-search serve``, a running ``clip-ingest``) is not opened either: one line says who holds it,
and the run files are shown all the same.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import asdict, replace
from typing import Any

import click

from ..backends.base import VectorStore
from ..config import Settings, StoreTarget
from ..ingest.deadletter import RunFiles, read_dead_letter_head
from ..ingest.lock import LockedError, LockHolder, RunLock, default_lock_path, read_holder, store_holder
from ..ingest.plan import Shard
from ..ingest.quarantine import Quarantine, QuarantineError
from ..sink import Sink
from ..targets import holds, open_sink
from .common import EXIT_FAILED_FILES, EXIT_FATAL, EXIT_LOCKED, EXIT_OK, common_options, fatal, load_settings, setting_option, store_target
from .ingest import DEAD_LETTER, INGEST, SHARD

EXIT_MISSING = 6
"""``clip-ingest status``: the collection does not exist (nothing ingested yet, or another
--collection / --data-dir / store than the one meant)."""

#: dead letters listed by the text output (--json lists as many as the last run's summary)
LISTED = 5

HEALTH_CODES = {"healthy": EXIT_OK, "unreadable": EXIT_FATAL, "attention": EXIT_FAILED_FILES, "held": EXIT_LOCKED,
                "missing": EXIT_MISSING}


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@setting_option(replace(SHARD, help="The last run and dead letters of this shard's worker", default_text="unsharded",
                        show_default=True))
@setting_option(replace(DEAD_LETTER, help="The dead-letter file, when runs are given one", default_text="as clip-ingest's"))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts and monitoring).")
def status(as_json: bool, **params: Any) -> None:
    """Show a collection's state: its point count, the model it records, its aliases, the last
    run (outcome, exit code, counts, start and end), the dead letters of that run and the
    quarantined files. The same store, collection and config options as clip-ingest.

    Every clip-ingest run (and every scheduled pass of clip-search serve --ingest-every) leaves
    its summary in DATA_DIR/dead-letter/TARGET-COLLECTION.last-run.json, refused and interrupted
    runs included. Nothing is created: a missing embedded store is reported, not made.

    Exit codes: 0 healthy (the collection exists, the last run, if any, ended ok and left no dead
    letters); 1 the store cannot be read; 2 usage; 3 needs attention (the last run did not end
    ok, or left dead letters: see its outcome); 4 the embedded store is held by another process
    (clip-search serve, a running clip-ingest), so the collection was not read; 6 the collection
    does not exist.
    """
    settings = load_settings(params, INGEST)
    try:
        shard = Shard.parse(settings.shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report = collect(settings, shard)
    click.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else render(report))
    raise SystemExit(HEALTH_CODES[report["health"]])


def collect(settings: Settings, shard: Shard) -> dict[str, Any]:
    """The status report of the configured collection (what ``--json`` prints)."""
    target = store_target(settings)
    files = RunFiles.of(os.path.abspath(settings.data_dir), target.target, settings.collection, shard.label,
                        settings.dead_letter)
    report: dict[str, Any] = {"target": target.target, "location": target.location, "collection": settings.collection}
    report.update(_run_files(files))
    worker = "" if target.embedded else shard.label
    lock_path = settings.lock_file or default_lock_path(target.target, target.location, settings.collection, worker)
    report.update(held_by=None, ingest_running=None)
    if target.embedded:
        whole = holds(target.target) == "location"
        server = store_holder(target.target, target.location, None if whole else settings.collection)
        if server is not None:
            report.update(held_by=asdict(server), health="held")
            return report
        if not os.path.exists(target.location):
            report.update(exists=False, health="missing")
            return report
    else:
        running = read_holder(lock_path)
        report["ingest_running"] = asdict(running) if running is not None else None
    try:
        # an embedded store is read under the run lock: a cron run starting meanwhile is refused
        # naming this command, instead of failing to open the store
        with RunLock(lock_path, command="clip-ingest status", about={"target": target.target, "location": target.location,
                     "collection": settings.collection}) if target.embedded else nullcontext():
            report.update(_collection(target, settings.collection))
    except LockedError as exc:
        report.update(held_by=asdict(exc.holder) if exc.holder else None, error=str(exc), health="held")
        return report
    except Exception as exc:  # noqa: BLE001 - StoreError and whatever a driver raises: reported, exit 1
        report.update(exists=None, error=str(exc), health="unreadable")
        return report
    if not report["exists"]:
        report["health"] = "missing"
    elif (report["last_run"] or {}).get("outcome", "ok") != "ok" or report["dead_letters"]["count"]:
        report["health"] = "attention"
    else:
        report["health"] = "healthy"
    return report


def _collection(target: StoreTarget, collection: str) -> dict[str, Any]:
    """What the store (or the artifact) says about the collection (read only)."""
    with open_sink(target, collection) as store:
        recorded = store.collection_model()
        if recorded is None:
            return {"exists": False}
        model_id, dim = recorded
        return {"exists": True, "count": store.count(), "model_id": model_id, "dim": dim,
                "model_spec": store.collection_model_spec(), **_aliases(store)}


def _aliases(store: Sink) -> dict[str, Any]:
    """The alias the collection's name is and every alias of its database; none for an artifact."""
    if not isinstance(store, VectorStore):
        return {"alias_target": None, "aliases": {}}
    try:
        aliases = store.aliases()
    except Exception:  # noqa: BLE001 - a database without aliases
        aliases = {}
    return {"alias_target": store.alias_target(), "aliases": aliases}


def _run_files(files: RunFiles) -> dict[str, Any]:
    """The last run's summary, the dead letters and the quarantine, from their files."""
    try:
        with open(files.last_run, encoding="utf-8") as fh:
            last_run = json.load(fh)
    except (OSError, ValueError):
        last_run = None
    records, count = read_dead_letter_head(files.dead_letter, LISTED)
    try:
        entries = list(Quarantine.load(files.quarantine).entries.values())
    except QuarantineError as exc:
        fatal(str(exc))
    quarantined = [{**asdict(e), "changed_on_disk": e.changed_on_disk()} for e in entries]
    return {
        "last_run": last_run, "last_run_file": files.last_run,
        "dead_letters": {"file": files.dead_letter, "count": count,
                         "first": [{k: r.get(k) for k in ("path", "reason", "detail")} for r in records]},
        "quarantine": {"file": files.quarantine, "count": len(quarantined), "files": quarantined},
    }


def render(report: dict[str, Any]) -> str:
    """The report as lines for a person."""
    lines = [f"{report['target']} collection {report['collection']!r} at {report['location']}"]
    if report["health"] == "held":
        who = LockHolder(**report["held_by"]).describe() if report["held_by"] else "another process"
        lines.append(f"  held by {who}: the embedded store is open in that process, so it was not read")
    elif report.get("error"):
        lines.append(f"  cannot read the store: {report['error']}")
    elif not report.get("exists"):
        lines.append("  missing: no such collection (nothing ingested yet, or another --collection / --data-dir)")
    else:
        alias = f" (alias of {report['alias_target']})" if report.get("alias_target") else ""
        lines.append(f"  points: {report['count']}{alias}")
        lines.append(f"  model: {report['model_id']} (dim {report['dim']}), spec {report['model_spec'] or 'not recorded'}")
        if report["aliases"]:
            lines.append("  aliases: " + ", ".join(f"{a} -> {c}" for a, c in sorted(report["aliases"].items())))
    if report.get("ingest_running"):
        lines.append(f"  ingesting now: {LockHolder(**report['ingest_running']).describe()}")
    lines += _render_last_run(report["last_run"], report["last_run_file"])
    dead = report["dead_letters"]
    lines.append(f"  dead letters: {dead['count']} ({dead['file']})")
    lines += [f"    {d['path']}: {d['reason']}: {d['detail']}" for d in dead["first"]]
    if dead["count"] > len(dead["first"]):
        lines.append(f"    ... and {dead['count'] - len(dead['first'])} more")
    quarantine = report["quarantine"]
    lines.append(f"  quarantined: {quarantine['count']} ({quarantine['file']})")
    lines += [f"    {q['path']}: {q['reason'] or 'acknowledged'}, since {q['time']}"
              + (" (changed since: the next run reads it again)" if q["changed_on_disk"] else "") for q in quarantine["files"]]
    lines.append(f"health: {report['health']}")
    return "\n".join(lines)


def _render_last_run(last: dict[str, Any] | None, path: str) -> list[str]:
    if last is None:
        return [f"  last run: none recorded ({path})"]
    counts = ", ".join(f"{last.get(k, 0)} {k}" for k in ("new", "updated", "moved", "unchanged", "failed", "quarantined", "pruned"))
    lines = [f"  last run: {last.get('outcome', '?')} (exit {last.get('exit_code', '?')}), started {last.get('started_at')}, "
             f"finished {last.get('finished_at')}: {counts}"]
    if last.get("error"):
        lines.append(f"    {last['error']}")
    return lines


__all__ = ["EXIT_MISSING", "collect", "status"]
