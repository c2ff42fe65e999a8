"""The ``clip-ingest`` and ``clip-search`` commands.

Importing this package imports every command module, and with it registers every command's
settings with :mod:`clip_ingest.connectors.config`: whichever tool runs, it can tell a key of
the shared config file that another command uses (accepted, ignored) from a typo (an error).
"""

from . import duplicates, ingest, migrate, quarantine, search, serve, status  # noqa: F401  (registration)
