"""One configurable value, declared once: what the config file, the environment and the command line read.

A :class:`Setting` carries everything about a value in one place: its name (the TOML key, and
with ``-`` for ``_`` the ``--flag``), its type and default, its help text and how that help shows
the default, what a flag accepts (choices, a range, a file or folder) and shows as its value, and
whether it is a secret (secrets are never flags). :mod:`clip_ingest.connectors.config` resolves
settings by precedence and :mod:`clip_ingest.connectors.cli.common` generates the click options
from them. This module imports nothing of the project, so the backend descriptors can declare
their settings too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ENV_PREFIX = "CLIP_INGEST_"


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name (``snake_case``), type, default and whether it is a secret."""

    name: str
    type: type
    default: Any = None
    secret: bool = False
    help: str = ""
    """The flag's help, one sentence without its final full stop and without the default."""
    default_text: str | None = None
    """How the help shows a default that is derived rather than the value itself
    (``DATA_DIR/qdrant``); None: the default value when there is one."""
    choices: tuple[str, ...] = ()
    """The only values accepted (checked on the command line)."""
    minimum: int | float | None = None
    """The smallest number accepted on the command line."""
    minimum_open: bool = False
    """True: ``minimum`` itself is refused (a number above it is needed)."""
    maximum: int | float | None = None
    """The largest number accepted on the command line."""
    metavar: str | None = None
    """What ``--help`` shows for the value (``SECONDS``); None: click's name for the type."""
    path: Literal["file", "dir"] | None = None
    """The value is a path to a file or to a folder (checked on the command line)."""
    cli_flag: str | None = None
    """The command-line flag when it is not derived from the name (``-k``)."""
    negatable: bool = True
    """For a boolean: False makes a bare switch (``--dry-run``) with no ``--no-`` form."""
    show_default: bool = True
    """False: the help shows no default. A switch that is off or a list that is empty by default never
    shows one."""

    @property
    def env_var(self) -> str:
        """The environment variable it is read from: ``CLIP_INGEST_`` + the name in capitals."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag: :attr:`cli_flag`, else ``--`` + the name with ``-`` for ``_``."""
        return self.cli_flag or "--" + self.name.replace("_", "-")

    @property
    def help_text(self) -> str:
        """The help as ``--help`` shows it: the sentence, the default in brackets, a full stop."""
        shown = self.default_text if self.default_text is not None else self.default
        if not self.show_default or shown is None or shown is False or shown == []:
            return f"{self.help}."
        return f"{self.help} [default: {shown}]."


__all__ = ["ENV_PREFIX", "Setting"]
