"""The ``clip-ingest`` command: ingestion (the default) and its ``migrate`` subcommand.

``clip-ingest DIR …`` runs :func:`.ingest.main`; ``clip-ingest migrate …`` runs
:func:`.migrate.migrate`. Kept apart from both so that neither imports the other's command.
"""

from __future__ import annotations



from .common import DefaultCommandGroup
from .ingest import main as run
from .migrate import migrate

main = DefaultCommandGroup(
    name="clip-ingest", default="run", commands={"run": run, "migrate": migrate},
    context_settings={"help_option_names": ["-h", "--help"]},
)
"""Entry point of ``clip-ingest`` (``clip-ingest --help`` shows the ingestion command's help)."""

__all__ = ["main"]

if __name__ == "__main__":
    main()

