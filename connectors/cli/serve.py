"""``clip-search serve``: the search page and HTTP API over one collection (uvicorn + FastAPI).

Exit codes: Ctrl-C / SIGTERM shut the server down cleanly (open requests finish), after which
the process ends by that signal as uvicorn does; 1 fatal at start (database unreachable,
collection missing, model mismatch or not loadable), 2 usage error.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from ..config import Setting
from .common import common_options, fatal, load_query_embedder, load_settings, open_target_store, setup_logging, store_target

SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1"),
    Setting("port", int, 8000),
    Setting("max_upload_mb", float, 20.0),
    Setting("cors_origin", list, []),
    Setting("api_key", str, None, secret=True),
    Setting("batch_size", int, 64),
)


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help="Interface to listen on [default: 127.0.0.1, this machine only].")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port [default: 8000].")
@click.option("--max-upload-mb", type=click.FloatRange(0.001), default=None, help="Largest image upload, MB [default: 20].")
@click.option("--cors-origin", multiple=True, help="Allow browser pages of this origin to call the API (repeatable; default: none).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Most texts per shared forward pass [default: 64].")
@common_options
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def serve(verbose: int, quiet: bool, **params: Any) -> None:
    """Serve a search page at / and an HTTP API (/v1/..., described at /docs) over a collection.

    The same store, collection, model and config options as the other commands; the model
    defaults to the one the collection records. An API key (CLIP_INGEST_API_KEY or api_key in
    the [serve] section of the config file; never a flag) protects /v1/* and /metrics.
    Health: /healthz, readiness: /readyz, Prometheus metrics: /metrics.

    An embedded store (the default) can be open in one process only: stop the server while
    clip-ingest updates it, or use a Qdrant or Milvus server, where serve and a cron
    clip-ingest run side by side.
    """
    import uvicorn

    from ..backends.base import StoreError
    from ..factory import ModelLoadError
    from ..serve.app import Metrics, create_app
    from ..serve.service import SearchService

    setup_logging(verbose, quiet)
    params["cors_origin"] = list(params["cors_origin"]) or None
    settings = load_settings(params, SERVE_SETTINGS, section="serve")
    target = store_target(settings)
    metrics = Metrics()
    try:
        with open_target_store(target, settings.collection) as store:
            embedder = load_query_embedder(settings, store)
            service = SearchService(store, embedder, serialise_store=target.embedded, collection=settings.collection,
                                    max_batch=settings.batch_size, on_batch=metrics.batch.observe)
            app = create_app(service, max_upload_bytes=int(settings.max_upload_mb * (1 << 20)), api_key=settings.api_key,
                             cors_origins=tuple(settings.cors_origin), metrics=metrics)
            logging.getLogger("clip_ingest.serve").info(
                "serving %s collection %r (%d items, model %s) at http://%s:%d/", target.target, settings.collection,
                service.count(), embedder.model_id, settings.host, settings.port)
            try:
                uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning" if quiet else "info")
            finally:
                service.close()
    except (StoreError, ModelLoadError) as exc:
        fatal(str(exc))


__all__ = ["SERVE_SETTINGS", "serve"]
