"""Which filesystem each source folder is on, remembered between runs, so that ``--prune`` never
empties a collection because a disk was not mounted or another one was mounted in its place.

A source's identity is the mount that holds it: its mount point, filesystem type and device
(from ``/proc/self/mountinfo`` on Linux; the mount point alone elsewhere). Device numbers are not
used: they may change at a reboot, a false alarm on every boot would teach users to ignore it.
The record is a small JSON file beside the run's other files; losing it only skips the check once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable

from . import objectstore

log = logging.getLogger("clip_ingest.ingest")

MOUNTINFO = "/proc/self/mountinfo"


def mount_point(path: str, mounts: Iterable[str] = ()) -> str:
    """The mount point of the filesystem that holds ``path`` (an existing folder): the longest of
    ``mounts`` (mount points, e.g. from mountinfo, where bind mounts show too) that contains it,
    else the nearest ancestor ``os.path.ismount`` recognises."""
    path = os.path.realpath(path)
    containing = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
    if containing:
        return max(containing, key=len)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _mounts(mountinfo: str = MOUNTINFO) -> dict[str, str]:
    """mount point -> ``"FSTYPE SOURCE"`` of the mount visible there (the last one stacked)."""
    found: dict[str, str] = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if "-" not in fields:
                    continue
                dash = fields.index("-")
                if len(fields) > dash + 2:
                    found[_unescape(fields[4])] = f"{fields[dash + 1]} {_unescape(fields[dash + 2])}"
    except OSError:  # not Linux: the mount point alone identifies the filesystem
        pass
    return found


def source_identity(root: str, mounts: dict[str, str] | None = None) -> str:
    """``"MOUNT_POINT FSTYPE SOURCE"`` of the filesystem holding the folder ``root``."""
    mounts = _mounts() if mounts is None else mounts
    point = mount_point(root, mounts)
    detail = mounts.get(point, "")
    return f"{point} {detail}".strip()


class SourceRecord:
    """The identities of a collection's source folders when they were last ingested.

    ``path=None`` keeps nothing (every check passes): a library caller that does not ask for it.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.recorded: dict[str, str] = {}
        if path is not None and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    data = json.load(fh)
                self.recorded = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable source record %s (%s)", path, exc)

    def current(self, roots: Iterable[str]) -> dict[str, str]:
        """The identity of each local folder among ``roots`` now (object-store prefixes have none)."""
        mounts = _mounts()
        return {root: source_identity(root, mounts) for root in roots
                if not objectstore.is_uri(root) and os.path.isdir(root)}

    def changed(self, now: dict[str, str]) -> dict[str, tuple[str, str]]:
        """root -> (recorded, now) for the roots whose filesystem is not the one recorded."""
        return {root: (self.recorded[root], ident) for root, ident in now.items()
                if root in self.recorded and self.recorded[root] != ident}

    def save(self, now: dict[str, str], keep: Iterable[str] = ()) -> None:
        """Record ``now``, except the roots in ``keep``, whose old identity stays (a refused change)."""
        if self.path is None:
            return
        keep = set(keep)
        merged = {**self.recorded, **{root: ident for root, ident in now.items() if root not in keep}}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(merged, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
        self.recorded = merged


__all__ = ["SourceRecord", "mount_point", "source_identity"]
