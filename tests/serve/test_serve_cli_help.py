"""``clip-search --version`` and ``clip-search --help`` naming every subcommand (``serve`` included)."""

from __future__ import annotations

from importlib.metadata import version

from click.testing import CliRunner

from clip_ingest.connectors.cli.search import main


def test_version_and_help_list_the_subcommands():
    runner = CliRunner()
    shown = runner.invoke(main, ["--version"])
    assert shown.exit_code == 0 and shown.output.strip() == f"clip-search {version('clip-ingest')}"
    helped = runner.invoke(main, ["--help"])
    assert helped.exit_code == 0 and "--text" in helped.output and "--version" in helped.output
    listing = helped.output.split("Other commands")[1]
    for command in ("serve", "duplicates", "review"):
        assert f"\n  {command} " in listing, helped.output
