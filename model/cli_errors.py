"""How ``clip-model`` commands turn expected failures into exit code 1 with one clear line."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import click

#: what every clip-model command runs on: the `torch` extra (a base install runs ingest, search
#: and serve without them)
TORCH_MODULES = ("torch", "open_clip")


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


def require_torch() -> None:
    """Exit 1 with the install command where torch or open_clip is not installed (found without
    importing them, so ``--help`` and this check stay fast)."""
    try:
        missing = [name for name in TORCH_MODULES if importlib.util.find_spec(name) is None]
    except (ImportError, ValueError):
        missing = list(TORCH_MODULES)
    if missing:
        raise click.ClickException(f"clip-model trains, evaluates and exports models with {' and '.join(TORCH_MODULES)}, "
                                   f"and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                                   "pip install 'clip-ingest[torch]'")
