"""Click options, settings and exit codes shared by ``clip-ingest`` and ``clip-search``.

The options are generated from the settings (:func:`setting_option`): flag, type, choices and
help come from the one :class:`~clip_ingest.connectors.setting.Setting` declaration. Every such
option defaults to None so that :func:`clip_ingest.connectors.config.resolve_settings` can tell
"not given" from a value and apply ``flags > config file > env > defaults``. Secrets (API keys,
tokens) are deliberately not options (they would end up in shell history and process lists):
they come from the environment (``CLIP_INGEST_<NAME>``) or the config file.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence, TypeVar

import click

from ..backends.base import VectorStore
from ..backends.registry import open_target
from ..config import COMMON_SETTINGS, Command, ConfigError, Settings, StoreTarget, resolve_settings, store_target
from ..setting import Setting
from ..targets import is_artifact

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
"""Everything was done."""
EXIT_FATAL = 1
"""The run could not be done (store unreachable, model mismatch, model not loadable...)."""
EXIT_USAGE = 2
"""Bad command line or configuration (click's own usage-error code)."""
EXIT_FAILED_FILES = 3
"""The run finished but some files failed (see the dead-letter file)."""
EXIT_LOCKED = 4
"""Another run holds the lock on this collection."""
EXIT_PRUNE_REFUSED = 5
"""The run finished but ``--prune`` removed nothing: a source was empty or on another filesystem, or
the prune would have removed more than ``--max-prune`` allows (the summary's ``prune_refused`` says which)."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (SIGINT); what was embedded until then is saved (the shell's 128 + 2)."""
EXIT_TERMINATED = 143
"""Stopped by SIGTERM (Kubernetes, systemd); what was embedded until then is saved (128 + 15)."""

def setting_option(setting: Setting) -> Callable[[F], F]:
    """The click option of ``setting``: its flag, a type that checks its choices, range or path, its
    metavar and help (default None: "not given", see the module docstring). Lists repeat
    (``multiple``); booleans are ``--name/--no-name``, or a bare switch when not negatable."""
    kind: Any = setting.type if setting.type in (int, float) else None
    if setting.choices:
        kind = click.Choice(setting.choices)
    elif setting.minimum is not None or setting.maximum is not None:
        kind = (click.IntRange if setting.type is int else click.FloatRange)(
            setting.minimum, setting.maximum, min_open=setting.minimum_open)
    elif setting.path is not None:
        kind = click.Path(file_okay=setting.path == "file", dir_okay=setting.path == "dir")
    flag = setting.flag
    switch = setting.type is bool and not setting.negatable
    if setting.type is bool and setting.negatable:
        flag = f"{flag}/--no-{flag[2:]}"
    return click.option(flag, setting.name, type=kind, default=None, multiple=setting.type is list, is_flag=switch or None,
                        metavar=setting.metavar, help=setting.help_text)


def setting_options(settings: Sequence[Setting]) -> Callable[[F], F]:
    """The click options of ``settings`` in their order (``--help`` lists them so); secrets have none."""
    def add(fn: F) -> F:
        for setting in reversed(settings):
            if not setting.secret:
                fn = setting_option(setting)(fn)
        return fn

    return add


_COMMON_OPTIONS = (
    setting_options(COMMON_SETTINGS),
    click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help="TOML config file [default: ./clip-ingest.toml if present].",
    ),
)


def common_options(fn: F) -> F:
    """Add the shared store/model/config options to a click command."""
    for option in reversed(_COMMON_OPTIONS):
        fn = option(fn)
    return fn


class DefaultCommandGroup(click.Group):
    """A group whose first argument may be a subcommand, else everything goes to ``default``.

    ``clip-search --text dog`` runs the default (search) command, ``clip-search serve`` the
    subcommand; ``clip-search --help`` shows the default command's help, which names the others.
    """

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


def load_settings(params: Mapping[str, Any], command: Command) -> Settings:
    """Resolve ``command``'s parameters (flags, its tables of the config file, environment);
    config errors become click usage errors (exit 2)."""
    try:
        return resolve_settings(params, command.specs, section=command.name, inherits=command.inherits,
                                config_file=params.get("config_file"))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def open_target_store(target: StoreTarget, collection: str) -> VectorStore:
    """Connect to ``collection`` on the configured database (unset options keep the backend's defaults).

    An artifact target (``parquet``) is a usage error here: it is written to be loaded into a
    database (``clip-ingest --from-parquet``), not searched or migrated."""
    if is_artifact(target.target):
        raise click.UsageError(f"--target {target.target} is an artifact, not a database: load it into one with "
                               "clip-ingest --from-parquet DIR --target DATABASE, then use that")
    return open_target(target, collection)


def load_query_embedder(settings: Settings, store: VectorStore) -> Any:
    """The query model: ``--model`` when given, else the model the collection records, else the default."""
    recorded = store.collection_model_spec() if settings.origins.get("model") == "default" else None
    try:
        return load_settings_embedder(settings, recorded or settings.model, settings.get("batch_size", 32))
    except click.UsageError as exc:
        if recorded is None:
            raise
        # e.g. a bare architecture recorded before random weights had to be asked for: say whose spec it is
        raise click.UsageError(f"the model this collection records, {recorded!r}: {exc.message.rstrip('.')}; "
                               "or name the query model with --model") from None


def load_settings_embedder(settings: Settings, model: str, batch_size: int) -> Any:
    """``model`` on the runtime, quantization and device the settings name (a bad combination
    is a usage error, exit 2)."""
    from ..runtime import load_embedder

    try:
        return load_embedder(model, runtime=settings.runtime, quantize=settings.quantize, device=settings.device,
                             batch_size=batch_size, cpus=settings.get("cpus"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log clip-ingest to stderr (info by default, warnings when quiet, debug with -v); libraries: warnings."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("clip_ingest").setLevel(level)


def fatal(message: str, code: int = EXIT_FATAL) -> None:
    """Print ``Error: message`` to stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


__all__ = [
    "EXIT_FAILED_FILES", "EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_LOCKED", "EXIT_OK", "EXIT_PRUNE_REFUSED", "EXIT_TERMINATED", "EXIT_USAGE",
    "DefaultCommandGroup", "common_options", "fatal", "setting_option", "setting_options", "load_query_embedder", "load_settings", "load_settings_embedder", "open_target_store", "setup_logging", "store_target",
]
