"""One ingestion at a time per collection: an ``fcntl.flock`` run lock.

The kernel releases a flock when its process dies, so a lock left by a killed
run is simply taken over; the file's content (pid, host, start time) is only
there to tell the waiting run who holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from typing import IO

from .payload import now_iso


class LockedError(RuntimeError):
    """Another run holds the lock (exit code 4 on the command line)."""


def run_file_stem(target: str, collection: str, worker: str = "") -> str:
    """``TARGET-COLLECTION[-WORKER]``: names a run's files (lock, default dead-letter file)."""
    return "-".join(filter(None, (target, collection, worker)))


def default_lock_path(target: str, location: str, collection: str, worker: str = "") -> str:
    """A machine-wide lock file for ``collection`` at ``location`` (path or URL) on ``target``.

    ``worker`` (a shard label) gives each parallel worker of one collection its own lock.
    """
    key = f"{target}\0{location}\0{collection}" + (f"\0{worker}" if worker else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_file_stem(target, collection, worker))[:60]
    return os.path.join(tempfile.gettempdir(), "clip-ingest-locks", f"{safe}-{digest}.lock")


class RunLock:
    """Context manager holding an exclusive flock on ``path``.

    Args:
        path: the lock file (created if missing).
        timeout: seconds to wait for a running ingestion to finish; 0 fails at once.
        poll: seconds between attempts while waiting.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 0.0, poll: float = 0.2) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.poll = poll
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockedError` after ``timeout`` seconds."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fh)
                    fh.close()
                    raise LockedError(
                        f"another ingestion into this collection is running ({holder}); "
                        f"lock file {self.path}. Use --lock-timeout SECONDS to wait for it."
                    ) from None
                time.sleep(self.poll)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()}))
        fh.flush()
        self._fh = fh

    @staticmethod
    def _holder(fh: IO[str]) -> str:
        fh.seek(0)
        try:
            info = json.loads(fh.read() or "{}")
        except json.JSONDecodeError:
            return "holder unknown"
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
