"""A run's summary as a Prometheus text file (node_exporter's textfile collector format).

Schedulers see only an exit code, and a run whose only problem is some failed files may be
told to exit 0 (``--failed-files-ok``) so that Kubernetes, Ray and systemd do not retry it. The
failure must stay visible to a monitor all the same: every run, refused and failed ones
included, rewrites this file atomically (node_exporter never reads half a file), so an alert
such as ``clip_ingest_last_run_failed_files > 0`` or a stale
``clip_ingest_last_run_finished_timestamp_seconds`` fires whatever the exit code was.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Iterable

from .summary import OUTCOMES

#: summary counters exported as ``clip_ingest_last_run_<name>`` gauges, with their help text
COUNTERS: dict[str, str] = {
    "scanned": "Files the last run listed.",
    "new": "Paths the last run added.",
    "updated": "Paths whose file changed.",
    "moved": "Paths recognised as moved files.",
    "unchanged": "Paths skipped unread.",
    "failed": "Files the last run could not ingest (its dead-letter file lists them).",
    "quarantined": "Files skipped because they were acknowledged as undecodable.",
    "pruned": "Paths --prune removed.",
    "embedded": "Images the last run embedded.",
    "duration_s": "Seconds the last run took.",
}

#: exported names that differ from the summary's key (Prometheus naming: units, base names)
RENAMED = {"failed": "failed_files", "duration_s": "duration_seconds"}


def _label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, Any]]) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}"


def _timestamp(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def render_textfile(summary: dict[str, Any]) -> str:
    """The text exposition of ``summary``: per-run gauges labelled by target and collection, one
    ``clip_ingest_last_run_outcome`` series per outcome word (1 for this run's), the exit code
    the process ended with, and when the run finished."""
    base = [("target", summary.get("target") or ""), ("collection", summary.get("collection") or "")]
    labels = _labels(base)
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP clip_ingest_last_run_{name} {help_text}", f"# TYPE clip_ingest_last_run_{name} gauge"])
        lines.extend(f"clip_ingest_last_run_{name}{series} {value:g}" for series, value in samples)

    gauge("exit_code", "Exit code of the last run (0 also when --failed-files-ok hid failed files).",
          [(labels, float(summary.get("exit_code", 1)))])
    outcome = summary.get("outcome")
    gauge("outcome", "1 for the outcome word of the last run (ok, failed_files, fatal, ...), else 0.",
          [(_labels([*base, ("outcome", word)]), float(word == outcome)) for word in dict.fromkeys(OUTCOMES.values())])
    for key, help_text in COUNTERS.items():
        gauge(RENAMED.get(key, key), help_text, [(labels, float(summary.get(key) or 0))])
    finished = _timestamp(summary.get("finished_at"))
    if finished is not None:
        gauge("finished_timestamp_seconds", "Unix time the last run ended.", [(labels, finished)])
    return "\n".join(lines) + "\n"


def write_textfile(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write :func:`render_textfile` of ``summary`` to ``path`` atomically (write, then rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render_textfile(summary))
    os.replace(tmp, path)


__all__ = ["render_textfile", "write_textfile"]
