"""The ``clip-ingest`` command: ingestion (the default) and its subcommands.

``clip-ingest DIR …`` runs :func:`.ingest.main`; ``clip-ingest migrate …`` :func:`.migrate.migrate`,
``clip-ingest status`` :func:`.status.status`, ``clip-ingest quarantine …``
:func:`.quarantine.quarantine`. Kept apart from all of them so that none imports another's command.
"""

from __future__ import annotations

from .common import DefaultCommandGroup
from .ingest import main as run
from .migrate import migrate
from .quarantine import quarantine
from .status import status

main = DefaultCommandGroup(
    name="clip-ingest", default="run",
    commands={"run": run, "migrate": migrate, "status": status, "quarantine": quarantine},
    context_settings={"help_option_names": ["-h", "--help"]},
)
"""Entry point of ``clip-ingest`` (``clip-ingest --help`` shows the ingestion command's help)."""

__all__ = ["main"]

if __name__ == "__main__":
    main()
