"""``clip-search serve``: the search page and HTTP API over one collection (uvicorn + FastAPI).

Exit codes: Ctrl-C / SIGTERM shut the server down cleanly (open requests finish), after which
the process ends by that signal as uvicorn does; 1 fatal at start (database unreachable,
collection missing, model mismatch or not loadable, an embedded store held by a running
clip-ingest), 2 usage error.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import click

from ..config import Setting, Settings, StoreTarget, register_command
from ..ingest.lock import SERVE_COMMAND, LockedError, RunLock, default_lock_path
from ..ingest.plan import Shard
from .common import (EXIT_USAGE, common_options, fatal, load_query_embedder, load_settings, load_settings_embedder,
                     open_target_store, setting_options, setup_logging, store_target)
from .ingest import INGEST, parse_index_fields, plan

if TYPE_CHECKING:  # imported by serve() itself: --help loads neither FastAPI nor the service
    from ..ingest.job import IngestJob
    from ..serve.app import Metrics
    from ..serve.scheduled_ingest import ScheduledIngest
    from ..serve.service import SearchService

#: in the order ``--help`` lists their options
SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", default_text="127.0.0.1, this machine only", help="Interface to listen on"),
    Setting("port", int, 8000, minimum=0, maximum=65535, help="Port"),
    Setting("max_upload_mb", float, 20.0, minimum=0.001, default_text="20", help="Largest image upload, MB"),
    Setting("cors_origin", list, [], help="Allow browser pages of this origin to call the API (repeatable; default: none)"),
    Setting("api_key", str, None, secret=True),
    Setting("batch_size", int, 64, minimum=1, help="Most texts (or images) per shared forward pass"),
    Setting("ingest_every", str, None, metavar="DURATION",
            help="Run the incremental ingestion inside the server now and then every DURATION (30m, 1h, 1d): "
            "the way to keep an embedded store fresh while serving it. Sources: --ingest, or the [ingest] "
            "section of the config file, which also sets every other clip-ingest option"),
    Setting("warm_duplicates", bool, True, default_text="on",
            help="Make the duplicates listing in the background at start and after each --ingest-every pass, "
            "so the page's first duplicates view does not wait for it (minutes on a large collection; it "
            "shares the CPUs with searches meanwhile)"),
)
SERVE = register_command("serve", SERVE_SETTINGS)

log = logging.getLogger("clip_ingest.serve")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90"``, ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"`` -> seconds (positive)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise click.UsageError(f"--ingest-every {text!r}: expected a positive duration such as 30s, 15m, 1h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@setting_options(SERVE_SETTINGS)
@click.option("--ingest", "ingest_sources", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="A folder for --ingest-every (repeatable).")
@common_options
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def serve(verbose: int, quiet: bool, **params: Any) -> None:
    """Serve a search page at / and an HTTP API (/v1/..., described at /docs) over a collection.

    The same store, collection, model and config options as the other commands; the model
    defaults to the one the collection records. An API key (CLIP_INGEST_API_KEY or api_key in
    the [serve] section of the config file; never a flag) protects /v1/* and /metrics.
    Health: /healthz, readiness: /readyz, Prometheus metrics: /metrics.

    Fresh data while serving: an embedded store (the default) can be open in one process only,
    so let the server ingest (--ingest-every 1h --ingest DIR: the same incremental run, lock,
    dead-letter file and summary as clip-ingest; POST /v1/ingest runs it at once, /v1/info
    shows the last pass). On an embedded store the server holds the collection's run lock while
    it serves, so a cron clip-ingest beside it exits 4 with a message naming the server. With a
    Qdrant or Milvus server, serve and a cron clip-ingest simply run side by side.
    """
    from ..backends.base import StoreError
    from ..model_spec import ModelLoadError

    setup_logging(verbose, quiet)
    params["cors_origin"] = list(params["cors_origin"]) or None
    ingest_sources = params.pop("ingest_sources")
    settings = load_settings(params, SERVE)
    job = _ingest_job(settings, params, ingest_sources)
    target = store_target(settings)
    try:
        with _store_lock(target, settings.collection, job), open_target_store(target, settings.collection) as store:
            _serve_store(store, settings, target, job, quiet)
    except LockedError as exc:
        who = exc.holder.describe() if exc.holder else "another process"
        fatal(f"cannot serve {target.target} collection {settings.collection!r} at {target.location}: {who} holds it, "
              "and an embedded store is open in one process at a time; start the server once that ends (its "
              "--ingest-every then replaces a cron clip-ingest), or use a database server")
    except (StoreError, ModelLoadError) as exc:
        fatal(str(exc))


def _serve_store(store: Any, settings: Settings, target: StoreTarget, job: IngestJob | None, quiet: bool) -> None:
    """Answer over ``store`` until the server stops (Ctrl-C, SIGTERM), with the scheduled passes of ``job``."""
    import uvicorn

    from ..serve.app import Metrics, create_app
    from ..serve.service import SearchService

    metrics = Metrics()
    embedder = load_query_embedder(settings, store)
    service = SearchService(store, embedder, serialise_store=target.embedded, collection=settings.collection,
                            max_batch=settings.batch_size, on_batch=metrics.batch.observe,
                            on_image_batch=metrics.image_batch.observe,
                            load_model=lambda spec: load_settings_embedder(settings, spec or settings.model, settings.batch_size))
    ingest = _scheduled_ingest(job, target, service, embedder, metrics, settings)
    app = create_app(service, max_upload_bytes=int(settings.max_upload_mb * (1 << 20)), api_key=settings.api_key,
                     cors_origins=tuple(settings.cors_origin), metrics=metrics, ingest=ingest)
    log.info("serving %s collection %r (%d items, model %s) at http://%s:%d/", target.target, settings.collection,
             service.count(), embedder.model_id, settings.host, settings.port)
    if ingest is not None:
        log.info("ingesting %s now and every %s (lock %s)", ", ".join(job.options.directories + job.options.manifests),
                 settings.ingest_every, job.lock_path)
        ingest.start()
    if settings.warm_duplicates:
        threading.Thread(target=service.warm_duplicates, name="warm-duplicates", daemon=True).start()
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning" if quiet else "info")
    finally:
        if ingest is not None:
            ingest.close()
        service.close()


def _scheduled_ingest(job: IngestJob | None, target: StoreTarget, service: SearchService, embedder: Any,
                      metrics: Metrics, settings: Settings) -> ScheduledIngest | None:
    """The passes of ``--ingest-every``, through the service's store handle (searches and writes
    take turns); on an embedded store they run under the lock the server holds (:func:`_store_lock`)."""
    from ..serve.scheduled_ingest import ScheduledIngest

    if job is None:
        return None
    passes = replace(job, lock_path=None) if target.embedded else job
    return ScheduledIngest(service.store, embedder, passes, every_s=parse_duration(settings.ingest_every),
                           on_outcome=lambda outcome: _after_pass(outcome, metrics, service, settings))


def _after_pass(outcome: str, metrics: Metrics, service: SearchService, settings: Settings) -> None:
    """A scheduled ingestion pass ended: count it, and (in its thread) make the duplicates listing
    of the collection it changed."""
    metrics.ingest_runs.labels(outcome).inc()
    if settings.warm_duplicates:
        service.warm_duplicates()


def _store_lock(target: StoreTarget, collection: str, job: IngestJob | None) -> AbstractContextManager[Any]:
    """On an embedded store, the collection's run lock, held while the server runs and recording
    ``clip-search serve`` as its holder: a cron ``clip-ingest`` is then refused (exit 4) by a
    message that names the server and says how to ingest through it. A database server takes
    writers side by side: no lock (the scheduled passes take it one by one)."""
    if not target.embedded:
        return nullcontext()
    path = job.lock_path if job is not None else default_lock_path(target.target, target.location, collection)
    about = {"target": target.target, "location": target.location, "collection": collection, "holds_store": True}
    return RunLock(path, command=SERVE_COMMAND, about=about)


def _ingest_job(settings: Settings, params: dict[str, Any], sources: tuple[str, ...]) -> IngestJob | None:
    """The scheduled ingestion ``--ingest-every`` asks for: the ``[ingest]`` settings of the config
    file (as a cron ``clip-ingest`` would read them) with ``--ingest`` folders as its sources."""
    from ..ingest.job import missing_sources

    if not settings.ingest_every:
        if sources:
            raise click.UsageError("--ingest needs --ingest-every (how often to look for new files)")
        return None
    parse_duration(settings.ingest_every)
    common = {k: v for k, v in params.items() if k not in {s.name for s in SERVE_SETTINGS}}
    ingest = load_settings({**common, "sources": sources or None}, INGEST)
    if not ingest.sources and not ingest.manifest:
        raise click.UsageError("--ingest-every: give the folders with --ingest DIR (or sources / manifest under [ingest])")
    if ingest.recreate or ingest.dry_run:
        raise click.UsageError("--ingest-every: recreate and dry_run cannot run on a schedule; run clip-ingest for them")
    job = plan(ingest, Shard(), parse_index_fields(ingest.index_field))
    try:
        missing = missing_sources(job.options)
    except ValueError as exc:  # credentials in an object-store URI
        fatal(str(exc), EXIT_USAGE)
    except OSError as exc:  # an object store that cannot be listed
        fatal(str(exc))
    if missing:
        fatal(f"not found: {', '.join(missing)} (--ingest takes folders, manifest files)", EXIT_USAGE)
    # the passes' summaries go to --summary and the last-run file; the metrics file is clip-ingest's
    return replace(job, metrics_path=None)


__all__ = ["SERVE", "SERVE_SETTINGS", "parse_duration", "serve"]
