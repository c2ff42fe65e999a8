"""How ``clip-model`` commands turn expected failures into exit code 1 with one clear line."""

from __future__ import annotations

from typing import Any, Callable

import click


def _failure_types() -> tuple[type[BaseException], ...]:
    from clip_ingest.connectors.decode import ImageDecodeError
    from clip_ingest.connectors.factory import ModelLoadError

    from .export import ExportError
    from .published import PublishedCheckpointError

    return (ModelLoadError, ImageDecodeError, ExportError, PublishedCheckpointError, ValueError, OSError)


def run_or_fail(action: Callable[[], Any]) -> Any:
    """Run ``action``; expected failures (bad data, model, files) become exit code 1 with one clear line."""
    try:
        return action()
    except click.ClickException:
        raise
    except _failure_types() as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
