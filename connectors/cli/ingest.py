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

from ..artifacts.parquet import artifact_folder
from ..backends.common import redact_uri
from ..backends.registry import INDEX_TYPES
from ..backends.registry import SETTINGS as BACKEND_SETTINGS
from ..backends.registry import TARGETS as DATABASES
from ..config import Setting, Settings, register_command
from ..ingest.executor_registry import EXECUTORS, describe_executors
from ..ingest.metadata import MetadataLimits
from ..ingest.plan import DEFAULT_MAX_PRUNE, Shard
from ..ingest.reader import DEFAULT_READ_TIMEOUT_S
from ..ingest.scan import DEFAULT_EXTENSIONS, normalise_extensions
from ..ingest.writer import RETRY_FOR_S
from ..targets import is_artifact
from .common import EXIT_USAGE, common_options, fatal, load_settings, load_settings_embedder, setting_options, setup_logging

if TYPE_CHECKING:  # imported by the run itself: --help loads neither the pipeline nor the model stack
    from ..ingest.job import IngestJob
    from ..ingest.runner import Outcome

log = logging.getLogger("clip_ingest.ingest")

F = TypeVar("F", bound=Callable[..., Any])

#: the limits of a sidecar or manifest row (docs/ingest-metadata.md), from the config file or the
#: environment only: ``metadata_max_bytes``, ``metadata_max_depth``...
METADATA_LIMIT_SETTINGS = tuple(Setting(f"metadata_{f.name}", int, f.default) for f in fields(MetadataLimits))

#: which worker's share of the files a run takes; ``clip-ingest status`` and ``quarantine`` read it too
SHARD = Setting("shard", str, "0/1", metavar="I/N", show_default=False,
                help="Only this worker's share of the files (hash of the relative path)")
#: where a run lists its failed files; ``clip-ingest status`` and ``quarantine`` read it too
DEAD_LETTER = Setting("dead_letter", str, None, path="file",
                      default_text="DATA_DIR/dead-letter/TARGET-COLLECTION[-shard-I-of-N].jsonl",
                      help="JSONL of failed files")

#: the settings of every command that embeds sources (``clip-ingest`` and ``clip-ingest migrate``), in
#: the order ``--help`` lists their options (``sources`` is the SOURCES argument)
SOURCE_SETTINGS: tuple[Setting, ...] = (
    Setting("manifest", list, [], path="file", help="CSV/JSONL manifest: path + metadata columns (repeatable)"),
    Setting("ext", list, list(DEFAULT_EXTENSIONS), default_text="common image types",
            help="File extensions to take from folders, e.g. --ext jpg,png"),
    Setting("include_hidden", bool, False, help="Also ingest hidden files and folders"),
    Setting("label_from_folder", bool, False, help="Add label = parent folder name"),
    Setting("index_field", list, [], metavar="NAME:TYPE",
            help=f"Payload field to index for filtering ({', '.join(INDEX_TYPES)})"),
    DEAD_LETTER,
    Setting("lock_timeout", float, 0.0, default_text="0, exit 4 at once",
            help="Seconds to wait for a running ingestion"),
    Setting("retry_for", float, RETRY_FOR_S, minimum=0, metavar="SECONDS", default_text=f"{RETRY_FOR_S:g}",
            help="How long a failing database call is retried (connection refused, unavailable, timeout) "
            "before the run exits 1; a re-run resumes"),
    Setting("read_timeout", float, DEFAULT_READ_TIMEOUT_S, minimum=0, minimum_open=True, metavar="SECONDS",
            default_text=f"{DEFAULT_READ_TIMEOUT_S:g}",
            help="Longest read of one file; a file on a stalled network mount then fails alone (dead-letter "
            "reason 'timeout') and the run goes on"),
    Setting("summary", str, None, path="file", help="Write a JSON run summary here"),
    Setting("metrics_file", str, None, path="file", metavar="FILE",
            help="Also write the run summary as Prometheus gauges (node_exporter textfile collector format: "
            "name it *.prom), every run, failed and refused ones included"),
    Setting("failed_files_ok", bool, False,
            help="Exit 0 instead of 3 when the run finished but some files failed (for Kubernetes and Ray "
            "jobs, which retry any other exit); the summary, dead-letter file and --metrics-file still show them"),
    Setting("workers", int, None, minimum=1, default_text="half the CPUs (--cpus), at least 1",
            help="Decode threads, or processes with --executor processes"),
    Setting("batch_size", int, 32, minimum=1, help="Images per model forward pass"),
)

#: the settings of the ingestion run itself (``clip-ingest``), in the order ``--help`` lists their options
RUN_SETTINGS: tuple[Setting, ...] = (
    Setting("prune", bool, False, help="Remove paths (and points left without one) whose files are gone"),
    Setting("max_prune", float, DEFAULT_MAX_PRUNE, minimum=0, maximum=1, metavar="SHARE",
            default_text=f"{DEFAULT_MAX_PRUNE:g}",
            help="Largest share of the collection's paths one --prune may remove; past it nothing is pruned and "
            "the run exits 5. A source folder with no file left (an unmounted disk) or on another filesystem "
            "than last time is never pruned either. 1 confirms: prune whatever is gone"),
    Setting("recreate", bool, False, negatable=False, help="Drop the collection and re-embed everything"),
    Setting("dry_run", bool, False, negatable=False, help="Print what would change; write nothing"),
    SHARD,
    Setting("lock_file", str, None, path="file", default_text="derived from target + collection",
            help="Run lock file"),
    Setting("from_parquet", str, None, path="dir", metavar="DIR",
            help="Load a Parquet artifact (a folder written by --target parquet) into the target collection "
            "instead of embedding images: no model runs; the model-safety check still applies"),
    Setting("executor", str, "local", choices=tuple(EXECUTORS),
            help=f"Where decoding and embedding run: {describe_executors()}. Same ids, skips, --prune, dead "
            "letters and summary either way"),
    Setting("ray_address", str, None, metavar="ADDR", default_text="$RAY_ADDRESS, else a local Ray instance",
            help="Ray cluster to run on"),
    Setting("ray_workers", int, None, minimum=1, default_text="one per GPU, or per --num-cpus-per-worker CPUs",
            help="Embedding actors"),
    Setting("num_gpus_per_worker", float, 0.0, minimum=0, metavar="N", default_text="0, embed on CPUs",
            help="GPUs per embedding actor; a fraction shares a GPU"),
    Setting("num_cpus_per_worker", float, 1.0, minimum=0, minimum_open=True, metavar="N", default_text="1",
            help="CPUs (and torch threads) per CPU embedding actor"),
)

INGEST_SETTINGS: tuple[Setting, ...] = (
    Setting("sources", list, []), *SOURCE_SETTINGS, *RUN_SETTINGS, *METADATA_LIMIT_SETTINGS,
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
        setting_options(SOURCE_SETTINGS),
        click.option("-v", "--verbose", count=True, help="Debug logging."),
        click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only."),
    ]):
        fn = option(fn)
    return fn


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@source_options
@setting_options(RUN_SETTINGS)
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
        if is_artifact(settings.target):
            fatal(f"--from-parquet loads into a database: choose --target {', '.join(DATABASES[:-1])} or {DATABASES[-1]}",
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
    elif is_artifact(job.target.target):
        folder = shlex.quote(str(artifact_folder(job.target.location, settings.collection)))
        log.info("written as the %s artifact %s; load it into a database with: clip-ingest --from-parquet %s "
                 "--target %s", job.target.target, folder, folder, DATABASES[0])
    elif not job.artifact:
        log.info("stored in %s collection %r at %s; search it with: %s", job.target.target, settings.collection,
                 job.target.location, search_command(settings))


def search_command(settings: Settings) -> str:
    """The clip-search command line that queries what this run wrote (no secrets: keys are not
    options, and credentials inside a URL are redacted)."""
    parts = ["clip-search", "--target", settings.target]
    where = [(setting.flag, getattr(settings, setting.name, None), setting.default)
             for setting in BACKEND_SETTINGS if not setting.secret]
    for flag, value, default in (("--collection", settings.collection, "images"), ("--data-dir", settings.data_dir, "clip-ingest-data"),
                                 *where, ("--model", settings.model, "starter")):
        if value and value != default:
            parts += [flag, shlex.quote(redact_uri(str(value)))]  # never echo credentials inside a URL
    return " ".join(parts + ["--text", shlex.quote("a photo of a dog")])


__all__ = ["DEAD_LETTER", "INGEST", "INGEST_SETTINGS", "RUN_SETTINGS", "SHARD", "SOURCE_SETTINGS", "main", "parse_index_fields", "plan", "run", "search_command", "source_options",
           "split_commas"]


if __name__ == "__main__":
    main()
