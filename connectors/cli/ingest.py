"""``clip-ingest``: put every image of folders or manifests into a Qdrant or Milvus collection.

Exit codes: 0 all done; 1 fatal (store, model mismatch, model load); 2 usage or
configuration error; 3 finished but some files failed (see the dead-letter
file); 4 another run, or a ``clip-search serve`` on the same embedded store, holds the
collection; 5 finished, but ``--prune`` removed nothing (an empty source, a changed mount, or
over ``--max-prune``). Every run, refused ones included, leaves its summary (outcome, exit code, failed
files) in ``DATA_DIR/dead-letter/TARGET-COLLECTION.last-run.json`` for ``clip-ingest status``.

``--failed-files-ok`` turns exit 3 into 0 for schedulers that retry every non-zero exit
(Kubernetes Jobs, Ray jobs): some files failing is then a finished run, not a failed one, and
stays visible in the summary (``outcome: failed_files``), the dead-letter file and the
``--metrics-file`` (a Prometheus text file). Every other code is kept: a crash, an unreachable
database or a usage error still fails, and a refused prune (5) still needs a person.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar

import click

from ..backends.common import redact_uri
from ..config import Setting, Settings, StoreTarget, register_command
from ..cpus import decode_workers
from ..ingest.deadletter import RunFiles
from ..ingest.lock import LockedError, LockHolder, RunLock, default_lock_path, refusal, store_holder
from ..ingest.metadata import MetadataLimits
from ..ingest.plan import DEFAULT_MAX_PRUNE, Shard
from ..ingest.reader import DEFAULT_READ_TIMEOUT_S
from ..ingest.scan import DEFAULT_EXTENSIONS, ManifestError, is_source_folder, normalise_extensions
from ..ingest.quarantine import QuarantineError
from ..ingest.summary import RunStats, failed_files_fields, outcome_fields, write_summary
from ..ingest.textfile_metrics import write_textfile
from ..ingest.writer import RETRY_FOR_S
from .common import (
    EXIT_FAILED_FILES,
    EXIT_PRUNE_REFUSED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_TERMINATED,
    EXIT_OK,
    EXIT_USAGE,
    common_options,
    fatal,
    load_settings,
    load_settings_embedder,
    open_target_store,
    setup_logging,
    store_target,
)

log = logging.getLogger("clip_ingest.ingest")

F = TypeVar("F", bound=Callable[..., Any])

INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "geo")

#: the limits of a sidecar or manifest row (docs/ingest-metadata.md), from the config file or the
#: environment only: ``metadata_max_bytes``, ``metadata_max_depth``...
METADATA_LIMIT_SETTINGS = tuple(Setting(f"metadata_{f.name}", int, f.default) for f in fields(MetadataLimits))

INGEST_SETTINGS: tuple[Setting, ...] = (
    Setting("sources", list, []),
    Setting("manifest", list, []),
    Setting("ext", list, list(DEFAULT_EXTENSIONS)),
    Setting("include_hidden", bool, False),
    Setting("label_from_folder", bool, False),
    Setting("index_field", list, []),
    Setting("prune", bool, False),
    Setting("max_prune", float, DEFAULT_MAX_PRUNE),
    *METADATA_LIMIT_SETTINGS,
    Setting("recreate", bool, False),
    Setting("dry_run", bool, False),
    Setting("shard", str, "0/1"),
    Setting("dead_letter", str, None),
    Setting("lock_file", str, None),
    Setting("lock_timeout", float, 0.0),
    Setting("retry_for", float, RETRY_FOR_S),
    Setting("read_timeout", float, DEFAULT_READ_TIMEOUT_S),
    Setting("summary", str, None),
    Setting("metrics_file", str, None),
    Setting("failed_files_ok", bool, False),
    Setting("from_parquet", str, None),
    Setting("workers", int, None),
    Setting("batch_size", int, 32),
    Setting("executor", str, "local"),
    Setting("ray_address", str, None),
    Setting("ray_workers", int, None),
    Setting("num_gpus_per_worker", float, 0.0),
    Setting("num_cpus_per_worker", float, 1.0),
)
INGEST = register_command("ingest", INGEST_SETTINGS)

def metadata_limits(settings: Settings) -> MetadataLimits:
    """The ``metadata_*`` settings as :class:`MetadataLimits` (a bad value is a usage error)."""
    try:
        return MetadataLimits(**{f.name: settings[f"metadata_{f.name}"] for f in fields(MetadataLimits)})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


#: write batch size by target: Qdrant's default request limit is 32 MB, Milvus' gRPC limit 64 MB
WRITE_BATCH_BYTES = {"qdrant": 4 << 20, "qdrant-edge": 4 << 20, "milvus": 16 << 20, "parquet": 64 << 20}


def parse_index_fields(specs: list[str]) -> dict[str, str]:
    """``["colour:keyword", "index:integer"]`` -> ``{"colour": "keyword", "index": "integer"}``."""
    fields: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = spec.partition(":")
        if not sep or not name or kind not in INDEX_TYPES:
            raise click.UsageError(f"--index-field {spec!r}: expected NAME:TYPE with TYPE one of {', '.join(INDEX_TYPES)}")
        fields[name] = kind
    return fields


def _split_commas(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for value in values for v in value.split(",") if v.strip())


def source_options(fn: F) -> F:
    """The options of every command that embeds sources: ``clip-ingest`` and ``clip-ingest migrate``."""
    for option in reversed([
        click.argument("sources", nargs=-1, type=click.Path(file_okay=False)),
        common_options,
        click.option("--manifest", multiple=True, type=click.Path(dir_okay=False), help="CSV/JSONL manifest: path + metadata columns (repeatable)."),
        click.option("--ext", multiple=True, help="File extensions to take from folders, e.g. --ext jpg,png [default: common image types]."),
        click.option("--include-hidden/--no-include-hidden", default=None, help="Also ingest hidden files and folders."),
        click.option("--label-from-folder/--no-label-from-folder", default=None, help="Add label = parent folder name."),
        click.option("--index-field", multiple=True, metavar="NAME:TYPE", help=f"Payload field to index for filtering ({', '.join(INDEX_TYPES)})."),
        click.option("--dead-letter", default=None, type=click.Path(dir_okay=False), help="JSONL of failed files [default: DATA_DIR/dead-letter/TARGET-COLLECTION[-shard-I-of-N].jsonl]."),
        click.option("--lock-timeout", default=None, type=float, help="Seconds to wait for a running ingestion [default: 0, exit 4 at once]."),
        click.option(
            "--retry-for", default=None, type=click.FloatRange(0), metavar="SECONDS",
            help=f"How long a failing database call is retried (connection refused, unavailable, timeout) "
            f"before the run exits 1; a re-run resumes [default: {RETRY_FOR_S:g}].",
        ),
        click.option(
            "--read-timeout", default=None, type=click.FloatRange(0, min_open=True), metavar="SECONDS",
            help=f"Longest read of one file; a file on a stalled network mount then fails alone (dead-letter "
            f"reason 'timeout') and the run goes on [default: {DEFAULT_READ_TIMEOUT_S:g}].",
        ),
        click.option("--summary", default=None, type=click.Path(dir_okay=False), help="Write a JSON run summary here."),
        click.option(
            "--metrics-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
            help="Also write the run summary as Prometheus gauges (node_exporter textfile collector format: "
            "name it *.prom), every run, failed and refused ones included.",
        ),
        click.option(
            "--failed-files-ok/--no-failed-files-ok", default=None,
            help="Exit 0 instead of 3 when the run finished but some files failed (for Kubernetes and Ray "
            "jobs, which retry any other exit); the summary, dead-letter file and --metrics-file still show them.",
        ),
        click.option("--workers", default=None, type=click.IntRange(1), help="Decode threads, or processes with --executor processes [default: half the CPUs (--cpus), at least 1]."),
        click.option("--batch-size", default=None, type=click.IntRange(1), help="Images per model forward pass [default: 32]."),
        click.option("-v", "--verbose", count=True, help="Debug logging."),
        click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only."),
    ]):
        fn = option(fn)
    return fn


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@source_options
@click.option("--prune/--no-prune", default=None, help="Remove paths (and points left without one) whose files are gone.")
@click.option(
    "--max-prune", default=None, type=click.FloatRange(0, 1), metavar="SHARE",
    help=f"Largest share of the collection's paths one --prune may remove; past it nothing is pruned and "
    f"the run exits 5. A source folder with no file left (an unmounted disk) or on another filesystem "
    f"than last time is never pruned either. 1 confirms: prune whatever is gone [default: {DEFAULT_MAX_PRUNE:g}].",
)
@click.option("--recreate", is_flag=True, default=None, help="Drop the collection and re-embed everything.")
@click.option("--dry-run", is_flag=True, default=None, help="Print what would change; write nothing.")
@click.option("--shard", default=None, metavar="I/N", help="Only this worker's share of the files (hash of the relative path).")
@click.option("--lock-file", default=None, type=click.Path(dir_okay=False), help="Run lock file [default: derived from target + collection].")
@click.option(
    "--from-parquet", default=None, type=click.Path(file_okay=False), metavar="DIR",
    help="Load a Parquet artifact (a folder written by --target parquet) into the target collection "
    "instead of embedding images: no model runs; the model-safety check still applies.",
)
@click.option(
    "--executor", type=click.Choice(["local", "processes", "ray"]), default=None,
    help="Where decoding and embedding run: decode threads on this machine, --workers decode processes "
    "on this machine (faster where decoding is the bound: small models on a CPU), or a Ray Data pipeline "
    "on a Ray cluster (extra `ray`). Same ids, skips, --prune, dead letters and summary either way [default: local].",
)
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Ray cluster to run on [default: $RAY_ADDRESS, else a local Ray instance].")
@click.option("--ray-workers", default=None, type=click.IntRange(1),
              help="Embedding actors [default: one per GPU, or per --num-cpus-per-worker CPUs].")
@click.option("--num-gpus-per-worker", default=None, type=click.FloatRange(0), metavar="N",
              help="GPUs per embedding actor; a fraction shares a GPU [default: 0, embed on CPUs].")
@click.option("--num-cpus-per-worker", default=None, type=click.FloatRange(0, min_open=True), metavar="N",
              help="CPUs (and torch threads) per CPU embedding actor [default: 1].")
def main(verbose: int, quiet: bool, **params: Any) -> None:
    """Embed every image under SOURCES (folders, or object-store prefixes such as
    s3://bucket/photos with credentials from the environment) or in --manifest files into a
    vector database.

    Re-running is incremental: unchanged files are skipped, changed ones updated,
    moved ones recognised by content. Exit codes: 0 done, 1 fatal, 2 usage,
    3 some files failed (see the dead-letter file), 4 locked by another run or by a
    clip-search serve holding the same embedded store, 5 done but --prune refused (see
    --max-prune), 130 / 143 stopped by Ctrl-C / SIGTERM
    (what was embedded is saved; re-run to resume). With --failed-files-ok, 3 becomes 0.

    The collection's state and the last run: `clip-ingest status`. Files that will never
    decode stop failing runs once acknowledged: `clip-ingest quarantine --help`. Another model
    for an existing collection, without downtime: `clip-ingest migrate --help`.
    """
    setup_logging(verbose, quiet)
    params["ext"] = _split_commas(params["ext"])
    settings = load_settings(params, INGEST)
    if settings.from_parquet:
        if settings.sources or settings.manifest:
            raise click.UsageError("--from-parquet loads embeddings that exist: give no folders or manifests with it")
        sys.exit(_load_artifact(settings))
    if not settings.sources and not settings.manifest:
        raise click.UsageError("give at least one folder to ingest or --manifest FILE")
    try:
        shard = Shard.parse(settings.shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    index_fields = parse_index_fields(settings.index_field)
    if not normalise_extensions(settings.ext):
        raise click.UsageError("--ext: no extension given")
    sys.exit(_run(settings, shard, index_fields))


#: what a dry run says it would do for each kind of change
_DRY_RUN_VERBS = {"new": "add", "updated": "update", "moved": "move", "metadata_updated": "update the metadata of",
                  "pruned": "prune", "deleted": "delete point"}


@dataclass(frozen=True)
class IngestJob:
    """One configured ingestion: what ``clip-ingest`` runs once and ``clip-search serve
    --ingest-every`` runs on a schedule, with the same lock, dead-letter file and summary."""

    target: StoreTarget
    options: Any  # IngestOptions (imported lazily: the pipeline pulls in the model stack)
    lock_path: str
    dead_letter: str
    summary_path: str | None
    last_run_path: str | None = None
    """Every run's summary also goes here (``clip-ingest status`` reads it); None in a dry run."""
    metrics_path: str | None = None
    """``--metrics-file``: every run's summary as a Prometheus text file; None: not written."""

    def summary_fields(self, collection: str) -> dict[str, Any]:
        """The fields of a run summary that come from the configuration, not the run."""
        return {"target": self.target.target, "location": self.target.location, "collection": collection,
                "dry_run": self.options.dry_run}

    def run_lock(self, command: str, timeout: float = 0.0, *, holds_store: bool = False) -> RunLock:
        """The run lock, recording ``command`` and this job's store as its holder."""
        about = {"target": self.target.target, "location": self.target.location,
                 "collection": self.options.collection, "holds_store": holds_store}
        return RunLock(self.lock_path, timeout=timeout, command=command, about=about)

    def record(self, summary: dict[str, Any]) -> None:
        """Write a run's summary where ``--summary`` asks, to the last-run file and, as gauges,
        to the ``--metrics-file``."""
        for path in {self.summary_path, self.last_run_path} - {None}:
            write_summary(path, summary)
        if self.metrics_path:
            try:
                write_textfile(self.metrics_path, summary)
            except OSError as exc:  # the run's work is done and recorded: a monitor reports the stale file
                log.error("cannot write the metrics file %s: %s", self.metrics_path, exc)


def plan_job(settings: Settings, shard: Shard, index_fields: dict[str, str]) -> IngestJob:
    """The :class:`IngestJob` that ``settings`` (resolved with :data:`INGEST_SETTINGS`) describe."""
    from ..ingest.pipeline import IngestOptions

    target = store_target(settings)
    files = RunFiles.of(settings.data_dir, target.target, settings.collection, shard.label, settings.dead_letter)
    dead_letter = files.dead_letter
    # shards of a server collection run in parallel; an embedded store is open in one process at a time
    worker = "" if target.embedded else shard.label
    lock_path = settings.lock_file or default_lock_path(target.target, target.location, settings.collection, worker)
    options = IngestOptions(
        collection=settings.collection,
        directories=settings.sources,
        manifests=settings.manifest,
        extensions=settings.ext,
        include_hidden=settings.include_hidden,
        label_from_folder=settings.label_from_folder,
        index_fields=index_fields,
        prune=settings.prune,
        max_prune=settings.max_prune,
        source_record=None if settings.dry_run else files.sources,
        metadata_limits=metadata_limits(settings),
        recreate=settings.recreate,
        dry_run=settings.dry_run,
        shard=shard,
        dead_letter=dead_letter,
        workers=decode_workers(settings.workers, settings.get("cpus")),
        batch_size=settings.batch_size,
        max_batch_bytes=WRITE_BATCH_BYTES[target.target],
        retry_for=settings.retry_for,
        read_timeout=settings.read_timeout,
        model_spec=os.path.abspath(settings.model) if os.path.isdir(settings.model) else settings.model,
        id_namespace=settings.get("id_namespace"),
        quarantine=files.quarantine,
    )
    return IngestJob(target, options, lock_path, dead_letter, settings.summary, None if settings.dry_run else files.last_run,
                     None if settings.dry_run else settings.get("metrics_file"))


def missing_sources(settings: Settings) -> list[str]:
    """Configured folders (or object-store prefixes) and manifests that do not exist, reported
    before the model loads; a store that cannot be reached is reported with its reason."""
    return [p for p in settings.sources if not _is_source_folder(p)] + [m for m in settings.manifest if not os.path.isfile(m)]


def _is_source_folder(source: str) -> bool:
    """:func:`~..ingest.scan.is_source_folder`, its errors turned into exit codes."""
    try:
        return is_source_folder(source)
    except ValueError as exc:  # credentials in the URI
        fatal(str(exc), EXIT_USAGE)
    except OSError as exc:  # unreachable store, refused credentials
        fatal(f"cannot list {source}: {exc}", EXIT_FATAL)


def _run(settings: Settings, shard: Shard, index_fields: dict[str, str], preloaded: Any = None) -> int:
    """One ingestion run with the CLI's lock, signals, summary and exit codes (``preloaded``: an
    embedder already loaded, e.g. by ``migrate``, which runs several passes with one model)."""
    from ..backends.base import InvalidSettingError, ModelMismatchError, StoreError
    from ..model_spec import ModelLoadError
    from ..ingest.pipeline import IngestInterrupted, run_ingest

    job = plan_job(settings, shard, index_fields)
    target, options, dead_letter = job.target, job.options, job.dead_letter
    on_change = (lambda kind, path: click.echo(f"would {_DRY_RUN_VERBS.get(kind, kind)}: {path}")) if settings.dry_run else None
    embedder = None

    def summarise(stats: RunStats, code: int, listed_from: str | None, **extra: Any) -> dict[str, Any]:
        """The JSON summary of this run, whatever its end; ``listed_from``: the dead-letter file
        whose first records it lists (None when this run wrote none)."""
        fields = {**job.summary_fields(settings.collection), **outcome_fields(code), **failed_files_fields(listed_from), **extra}
        return stats.to_dict(model_id=embedder.model_id if embedder is not None else None, **fields)

    def end(message: str, code: int, stats: RunStats | None = None, listed_from: str | None = None, **extra: Any) -> None:
        """Record the summary of a run that ends early (refused, failed, interrupted), then exit."""
        if stats is None:
            stats = RunStats()
            stats.finish()
        job.record(summarise(stats, code, listed_from, error=message, **extra))
        fatal(message, code)

    missing = missing_sources(settings)
    if missing:  # before the model loads (seconds): a typo is reported at once
        end(f"not found: {', '.join(missing)} (sources are folders, --manifest takes files)", EXIT_USAGE)
    signals: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _stop(signals, signum))
    try:
        with job.run_lock("clip-ingest", timeout=settings.lock_timeout):
            embedder = preloaded or _load_embedder(settings)
            executor = _executor(settings, embedder)
            with open_target_store(target, settings.collection) as store:
                stats = run_ingest(store, embedder, options, on_change=on_change, executor=executor)
    except (IngestInterrupted, KeyboardInterrupt) as exc:
        saved = exc.stats if isinstance(exc, IngestInterrupted) else None
        code = EXIT_TERMINATED if signals else EXIT_INTERRUPTED
        done = ("nothing written yet" if saved is None else
                f"saved {saved.new} new, {saved.updated} updated, {saved.moved} moved ({saved.embedded} embedded)")
        end(f"interrupted by {'SIGTERM' if signals else 'Ctrl-C'}: {done}; the lock is released and "
            "running the same command again resumes where this run stopped", code, saved,
            None if settings.dry_run else dead_letter, interrupted=True)
    except LockedError as exc:
        end(str(exc), EXIT_LOCKED)
    except (FileNotFoundError, ManifestError, InvalidSettingError, QuarantineError) as exc:
        end(str(exc), EXIT_USAGE)
    except ModelMismatchError as exc:
        end(f"{exc}\nTo move the collection to the new model while it keeps serving, run `clip-ingest migrate` "
            "with the new --model; --recreate re-embeds in place (an outage); or choose another --collection.", EXIT_FATAL)
    except StoreError as exc:
        holder = _embedded_store_holder(target, settings.collection)
        if holder is not None:  # the store's own lock: name the process that keeps it open
            end(refusal(holder, f"{target.target} store {target.location}"), EXIT_LOCKED, store_error=str(exc))
        end(str(exc), EXIT_FATAL)
    except ModelLoadError as exc:
        end(str(exc), EXIT_FATAL)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code, outcome = finished_outcome(stats, failed_files_ok=bool(settings.get("failed_files_ok")))
    summary = summarise(stats, code, None if settings.dry_run else dead_letter,
                        dead_letter=None if settings.dry_run else dead_letter, outcome=outcome)
    job.record(summary)
    if settings.dry_run:
        click.echo("dry run, nothing written: " + json.dumps(summary, sort_keys=True))
    if not settings.dry_run:
        log.info("stored in %s collection %r at %s; search it with: %s", target.target, settings.collection,
                 target.location, _next_command(settings))
    if stats.failed:
        log.warning("%d file(s) failed; see %s (they are retried on the next run; `clip-ingest quarantine "
                    "--failed` acknowledges files that will never decode)", stats.failed, dead_letter)
    return code


def finished_outcome(stats: RunStats, *, failed_files_ok: bool = False) -> tuple[int, str]:
    """The exit code and outcome word of a run that went to its end: 3 ``failed_files`` when
    files failed; else 5 ``prune_refused`` when ``--prune`` was refused (never hidden: a retry
    refuses again, a person must look); else 0. With ``failed_files_ok`` failed files exit 0 (a
    finished run for a scheduler that retries any non-zero exit) and keep the word ``failed_files``."""
    if stats.failed and not failed_files_ok:
        return EXIT_FAILED_FILES, "failed_files"
    if stats.prune_refused:
        return EXIT_PRUNE_REFUSED, "prune_refused"
    return EXIT_OK, "failed_files" if stats.failed else "ok"


def _embedded_store_holder(target: StoreTarget, collection: str) -> LockHolder | None:
    """The process (``clip-search serve``) that keeps this embedded store open, if any: a Milvus
    Lite file is held whole, a Qdrant Edge collection one by one."""
    if not target.embedded:
        return None
    return store_holder(target.target, target.location, None if target.target == "milvus" else collection)


def _load_artifact(settings: Settings) -> int:
    """``--from-parquet``: batched, retried upserts of an artifact's points into the target
    collection (idempotent: the same ids, so a re-run or an interrupted load simply converges)."""
    from pathlib import Path

    from ..backends.base import CollectionSpec, InvalidSettingError, ModelMismatchError, Point, StoreError
    from ..backends.parquet_store import ParquetStore
    from ..ingest.writer import make_retrying

    source = Path(settings.from_parquet)
    artifact = ParquetStore(source.name, path=str(source.parent))
    recorded = artifact.spec
    if recorded is None:
        fatal(f"{source} is not a Parquet artifact (no collection.json; write one with --target parquet --out DIR)", EXIT_USAGE)
    target = store_target(settings)
    if target.target == "parquet":
        fatal("--from-parquet loads into a database: choose --target qdrant, qdrant-edge or milvus", EXIT_USAGE)
    lock_path = settings.lock_file or default_lock_path(target.target, target.location, settings.collection)
    spec = CollectionSpec(settings.collection, recorded.dim, recorded.model_id, recorded.indexed_fields, recorded.model_spec)
    retrying = make_retrying(settings.retry_for)
    stats = RunStats()
    try:
        with RunLock(lock_path, timeout=settings.lock_timeout), open_target_store(target, settings.collection) as store:
            retrying(store.ensure_collection, spec, recreate=settings.recreate)
            batch: list[Point] = []
            budget = WRITE_BATCH_BYTES[target.target] // (4 * recorded.dim + 2048)
            for point in artifact.points():
                batch.append(point)
                if len(batch) >= budget:
                    retrying(store.upsert, batch)
                    stats.new += len(batch)
                    batch = []
            if batch:
                retrying(store.upsert, batch)
                stats.new += len(batch)
            retrying(store.flush)
    except LockedError as exc:
        fatal(str(exc), EXIT_LOCKED)
    except InvalidSettingError as exc:
        fatal(str(exc), EXIT_USAGE)
    except ModelMismatchError as exc:
        fatal(f"{exc}\nThe artifact holds vectors of {recorded.model_id!r}; load it into a collection of that model.")
    except StoreError as exc:
        fatal(str(exc))
    stats.finish()
    summary = stats.to_dict(model_id=recorded.model_id, target=target.target, location=target.location,
                            collection=settings.collection, source=str(source), dry_run=False, **outcome_fields(EXIT_OK))
    if settings.summary:
        write_summary(settings.summary, summary)
    log.info("loaded %d points of %s from %s into %s collection %r", stats.new, recorded.model_id, source, target.target,
             settings.collection)
    return EXIT_OK


def _stop(signals: list[int], signum: int) -> None:
    """SIGTERM handler: stop like Ctrl-C (the run saves what it embedded and releases its lock)."""
    signals.append(signum)
    raise KeyboardInterrupt


def _next_command(settings: Settings) -> str:
    """The clip-search command line that queries what this run wrote (no secrets: keys are not
    options, and credentials inside a URL are redacted)."""
    parts = ["clip-search", "--target", settings.target]
    for flag, value, default in (("--collection", settings.collection, "images"), ("--data-dir", settings.data_dir, "clip-ingest-data"),
                                 ("--qdrant-url", settings.qdrant_url, None), ("--qdrant-path", settings.qdrant_path, None),
                                 ("--milvus-uri", settings.milvus_uri, None), ("--model", settings.model, "starter")):
        if value and value != default:
            parts += [flag, shlex.quote(redact_uri(str(value)))]  # never echo credentials inside a URL
    return " ".join(parts + ["--text", shlex.quote("a photo of a dog")])


def _load_embedder(settings: Settings):
    return load_settings_embedder(settings, settings.model, settings.batch_size)


def _executor(settings: Settings, embedder: Any) -> Any:
    """The run's executor (None: the pipeline's default threads). ``--executor processes`` runs the
    decode stage in ``--workers`` processes; ``--executor ray`` rebuilds the run's model, runtime
    and batch size inside each Ray actor."""
    import functools
    import importlib.util

    if settings.get("executor") == "processes":
        if getattr(embedder, "preparer", None) is None:
            fatal("--executor processes needs an open_clip or ONNX model (its input path runs in the "
                  "worker processes); use --executor local", EXIT_USAGE)
        from ..ingest.process_executor import ProcessExecutor

        return ProcessExecutor(workers=decode_workers(settings.workers, settings.get("cpus")), read_timeout=settings.read_timeout)
    if settings.get("executor") != "ray":
        return None
    if importlib.util.find_spec("ray") is None:
        fatal("--executor ray needs Ray Data: pip install 'clip-ingest[ray]'", EXIT_USAGE)
    from ..ingest.ray_executor import RayExecutor
    from ..runtime import load_embedder

    model = os.path.abspath(settings.model) if os.path.isdir(settings.model) else settings.model
    factory = functools.partial(load_embedder, model, runtime=settings.runtime, quantize=settings.quantize,
                                batch_size=settings.batch_size)
    return RayExecutor(factory, address=settings.ray_address, embed_workers=settings.ray_workers,
                       num_gpus_per_worker=settings.num_gpus_per_worker, num_cpus_per_worker=settings.num_cpus_per_worker,
                       batch_size=settings.batch_size, read_timeout=settings.read_timeout,
                       device=None if settings.device in (None, "auto") else settings.device,
                       progress=bool(sys.stderr.isatty()))


__all__ = ["INGEST", "INGEST_SETTINGS", "IngestJob", "finished_outcome", "main", "missing_sources", "parse_index_fields",
           "plan_job"]


if __name__ == "__main__":
    main()
