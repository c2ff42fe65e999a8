"""Test helper: the ``clip-ingest`` command group run in-process, in a clean working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from clip_ingest.connectors.cli.clip_ingest import main

#: the tiny seeded random model: real open_clip, no download
MODEL = ("--model", "clip-ingest-tiny:random")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory (no stray clip-ingest.toml) and no CLIP_INGEST_* from the outside."""
    for key in list(os.environ):
        if key.startswith("CLIP_INGEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> Result:
    """``clip-ingest ARGS`` (a subcommand, or the ingestion by default)."""
    return CliRunner().invoke(main, list(args))


__all__ = ["MODEL", "cli", "workdir"]
