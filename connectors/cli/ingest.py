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

The run itself is :func:`~clip_ingest.connectors.ingest.runner.run_job`; this module is its
command line: the options, their checks, the exit code and what is printed.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from ..backends.common import redact_uri
from ..backends.registry import BACKENDS, INDEX_TYPES, backend
from ..config import Setting, Settings, register_command
from ..ingest.executor_registry import EXECUTORS, describe_executors
from ..ingest.metadata import MetadataLimits
from ..ingest.plan import DEFAULT_MAX_PRUNE, Shard
from ..ingest.reader import DEFAULT_READ_TIMEOUT_S
from ..ingest.scan import DEFAULT_EXTENSIONS, normalise_extensions
from ..ingest.writer import RETRY_FOR_S
from .common import EXIT_USAGE, common_options, fatal, load_settings, load_settings_embedder, setup_logging

if TYPE_CHECKING:  # imported by the run itself: --help loads neither the pipeline nor the model stack
    from ..ingest.job import IngestJob
    from ..ingest.runner import Outcome

log = logging.getLogger("clip_ingest.ingest")

F = TypeVar("F", bound=Callable[..., Any])

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


def parse_index_fields(specs: list[str]) -> dict[str, str]:
    """``["colour:keyword", "index:integer"]`` -> ``{"colour": "keyword", "index": "integer"}``."""
    fields: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = spec.partition(":")
        if not sep or not name or kind not in INDEX_TYPES:
            raise click.UsageError(f"--index-field {spec!r}: expected NAME:TYPE with TYPE one of {', '.join(INDEX_TYPES)}")
        fields[name] = kind
    return fields


def split_commas(values: tuple[str, ...]) -> tuple[str, ...]:
    """``("jpg,png", "gif")`` -> ``("jpg", "png", "gif")``."""
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
    "--executor", type=click.Choice(list(EXECUTORS)), default=None,
    help=f"Where decoding and embedding run: {describe_executors()}. Same ids, skips, --prune, dead letters and "
    "summary either way [default: local].",
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
    params["ext"] = split_commas(params["ext"])
    settings = load_settings(params, INGEST)
    if settings.from_parquet:
        if settings.sources or settings.manifest:
            raise click.UsageError("--from-parquet loads embeddings that exist: give no folders or manifests with it")
        if not backend(settings.target).searchable:
            databases = [name for entry in BACKENDS if entry.searchable for name in entry.names]
            fatal(f"--from-parquet loads into a database: choose --target {', '.join(databases[:-1])} or {databases[-1]}",
                  EXIT_USAGE)
    elif not settings.sources and not settings.manifest:
        raise click.UsageError("give at least one folder to ingest or --manifest FILE")
    try:
        shard = Shard.parse(settings.shard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    index_fields = parse_index_fields(settings.index_field)
    if not normalise_extensions(settings.ext):
        raise click.UsageError("--ext: no extension given")
    sys.exit(run(settings, shard, index_fields))


#: what a dry run says it would do for each kind of change
_DRY_RUN_VERBS = {"new": "add", "updated": "update", "moved": "move", "metadata_updated": "update the metadata of",
                  "pruned": "prune", "deleted": "delete point"}


def plan(settings: Settings, shard: Shard, index_fields: dict[str, str]) -> IngestJob:
    """The job ``settings`` (resolved with :data:`INGEST_SETTINGS`) describe; a bad setting is a usage error."""
    from ..ingest.job import job_from_settings

    try:
        return job_from_settings(settings, shard, index_fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def run(settings: Settings, shard: Shard, index_fields: dict[str, str], embedder: Any = None) -> int:
    """One ingestion run as ``clip-ingest`` makes it: its outcome printed, its exit code returned
    (``embedder``: a model already loaded, e.g. by ``migrate``, which runs several passes with one)."""
    from ..ingest.executor_registry import make_executor, rebuild_factory
    from ..ingest.runner import run_job
    from ..runtime import load_embedder

    job = plan(settings, shard, index_fields)
    model = job.options.model_spec or settings.model
    on_change = (lambda kind, path: click.echo(f"would {_DRY_RUN_VERBS.get(kind, kind)}: {path}")) if settings.dry_run else None
    outcome = run_job(job, lambda: embedder or load_settings_embedder(settings, settings.model, settings.batch_size),
                      executor=lambda loaded: make_executor(settings, loaded, rebuild_factory(load_embedder, settings, model)),
                      on_change=on_change)
    _report(outcome, job, settings)
    return outcome.exit_code


def _report(outcome: Outcome, job: IngestJob, settings: Settings) -> None:
    """Say how the run ended: the error of one that did not finish, else where its points are."""
    if outcome.error is not None:
        fatal(outcome.error, outcome.exit_code)
    if settings.dry_run:
        click.echo("dry run, nothing written: " + json.dumps(outcome.summary, sort_keys=True))
    elif not job.artifact:
        log.info("stored in %s collection %r at %s; search it with: %s", job.target.target, settings.collection,
                 job.target.location, search_command(settings))


def search_command(settings: Settings) -> str:
    """The clip-search command line that queries what this run wrote (no secrets: keys are not
    options, and credentials inside a URL are redacted)."""
    parts = ["clip-search", "--target", settings.target]
    for flag, value, default in (("--collection", settings.collection, "images"), ("--data-dir", settings.data_dir, "clip-ingest-data"),
                                 ("--qdrant-url", settings.qdrant_url, None), ("--qdrant-path", settings.qdrant_path, None),
                                 ("--milvus-uri", settings.milvus_uri, None), ("--model", settings.model, "starter")):
        if value and value != default:
            parts += [flag, shlex.quote(redact_uri(str(value)))]  # never echo credentials inside a URL
    return " ".join(parts + ["--text", shlex.quote("a photo of a dog")])


__all__ = ["INGEST", "INGEST_SETTINGS", "main", "parse_index_fields", "plan", "run", "search_command", "source_options",
           "split_commas"]


if __name__ == "__main__":
    main()
