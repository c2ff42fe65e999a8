"""What a scheduler sees of a run: the exit code, with and without ``--failed-files-ok``, and the
``--metrics-file`` a monitor alerts on (parsed with Prometheus' own text parser). Real runs of
``clip-ingest`` on the tiny model; a database on a closed port is the unreachable one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cli_helpers import workdir  # noqa: F401 - a fixture
from clip_ingest.connectors.cli.ingest import main
from serve_helpers import free_port

MODEL = ("--model", "clip-ingest-tiny:random", "--workers", "1")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*MODEL, *args])
    return result.exit_code, result.output


def samples(path: Path) -> dict[tuple[str, tuple], float]:
    """``{(name, sorted labels): value}`` of a text exposition file."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    wanted = {"target": "qdrant", "collection": "images", **labels}
    return found[(f"clip_ingest_last_run_{name}", tuple(sorted(wanted.items())))]


def test_failed_files_ok_exits_0_and_the_failures_stay_visible(workdir, shape_folder):
    (shape_folder / "empty.jpg").write_bytes(b"")
    (shape_folder / "text.jpg").write_text("hello")
    code, output = run(str(shape_folder), "--summary", "s.json", "--metrics-file", "m/clip-ingest.prom", "--failed-files-ok")
    assert code == 0, output
    summary = json.loads((workdir / "s.json").read_text())
    assert (summary["outcome"], summary["exit_code"], summary["failed"], summary["new"]) == ("failed_files", 0, 2, 12)
    assert sorted(Path(f["path"]).name for f in summary["failed_files"]) == ["empty.jpg", "text.jpg"]
    assert "empty.jpg" in Path(summary["dead_letter"]).read_text()
    found = samples(workdir / "m" / "clip-ingest.prom")
    assert value(found, "failed_files") == 2 and value(found, "exit_code") == 0 and value(found, "new") == 12
    assert value(found, "outcome", outcome="failed_files") == 1 and value(found, "outcome", outcome="ok") == 0
    assert value(found, "finished_timestamp_seconds") > 1.7e9
    assert not list((workdir / "m").glob("*.tmp")), "the atomic write left its temporary file"


def test_without_the_setting_failed_files_exit_3_and_the_config_file_sets_it(workdir, shape_folder):
    (shape_folder / "empty.jpg").write_bytes(b"")
    code, output = run(str(shape_folder), "--metrics-file", "clip-ingest.prom")
    assert code == 3, output
    assert value(samples(workdir / "clip-ingest.prom"), "exit_code") == 3
    (workdir / "clip-ingest.toml").write_text("[ingest]\nfailed_files_ok = true\n")
    code, output = run(str(shape_folder), "--metrics-file", "clip-ingest.prom")
    assert code == 0, output
    assert value(samples(workdir / "clip-ingest.prom"), "outcome", outcome="failed_files") == 1


def test_an_unreachable_database_and_a_usage_error_still_fail_with_the_setting(workdir, shape_folder):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, output = run(str(shape_folder), "--qdrant-url", url, "--retry-for", "0", "--failed-files-ok",
                       "--metrics-file", "fatal.prom")
    assert code == 1 and url.removeprefix("http://") in output, output
    found = samples(workdir / "fatal.prom")
    assert value(found, "exit_code") == 1 and value(found, "outcome", outcome="fatal") == 1
    code, output = run(str(workdir / "no-such-folder"), "--failed-files-ok", "--metrics-file", "usage.prom")
    assert code == 2, output
    assert value(samples(workdir / "usage.prom"), "outcome", outcome="usage") == 1
