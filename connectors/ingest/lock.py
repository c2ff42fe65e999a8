"""One ingestion at a time per collection: an ``fcntl.flock`` run lock that names its holder.

The kernel releases a flock when its process dies, so a lock left by a killed
run is simply taken over. The file's content, a JSON :class:`LockHolder` (command, pid, host,
start time, the store it is about), is written when the lock is taken and marked ``released``
when it is let go: it tells a refused run who holds the lock, and what to do about it. ``clip-search
serve`` on an embedded store holds its collection's run lock for as long as it serves
(``holds_store``): an embedded store is open in one process at a time, so a cron
``clip-ingest`` beside it is refused with a message that names the server and says how to
ingest through it instead.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

from ..backends.registry import ADDRESS_FLAGS
from .payload import now_iso

#: the command recorded by ``clip-search serve`` (matched to tailor the refusal message)
SERVE_COMMAND = "clip-search serve"

#: what to do when a server holds an embedded store: let it ingest, or use a database server
SERVER_ADVICE = (
    "an embedded store is open in one process at a time, so let the server ingest: (re)start it with "
    "--ingest-every DURATION --ingest DIR (the same incremental run, dead-letter file and summary), or "
    "POST /v1/ingest to it for a pass now; or use a database server (" + ", or ".join(f"{flag} http://..." for flag in ADDRESS_FLAGS)
    + "), where clip-ingest and clip-search serve run side by side"
)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run lock: what the lock file records."""

    command: str
    pid: int
    host: str
    started: str
    target: str = ""
    location: str = ""
    collection: str = ""
    holds_store: bool = False
    """True for a ``clip-search serve`` that keeps an embedded store open while it serves."""

    def describe(self) -> str:
        """``clip-search serve (pid 42 on host, since 2026-...)``."""
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.started})"

    def is_alive(self) -> bool:
        """Whether the recorded process still runs (always assumed for another host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    @classmethod
    def parse(cls, text: str) -> "LockHolder | None":
        """The holder a lock file records, or None (released, empty or unreadable)."""
        try:
            data = json.loads(text or "{}")
            if data.get("released"):
                return None
            return cls(command=str(data.get("command") or "clip-ingest"), pid=int(data["pid"]), host=str(data["host"]),
                       started=str(data["started"]), target=str(data.get("target", "")),
                       location=str(data.get("location", "")), collection=str(data.get("collection", "")),
                       holds_store=bool(data.get("holds_store", False)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class LockedError(RuntimeError):
    """Another process holds the lock (exit code 4 on the command line); ``holder`` says who."""

    def __init__(self, message: str, holder: LockHolder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def refusal(holder: LockHolder | None, what: str) -> str:
    """Why ``what`` (the lock file, the store) cannot be used now, and what to do."""
    if holder is None:
        return f"another ingestion into this collection is running (holder unknown); {what}. " \
               "Use --lock-timeout SECONDS to wait for it."
    if holder.holds_store:
        return f"this store is held by {holder.describe()}; {what}: {SERVER_ADVICE}."
    if holder.command == SERVE_COMMAND:
        return f"a scheduled ingestion pass of {holder.describe()} is running; {what}. " \
               "Use --lock-timeout SECONDS to wait for it."
    return f"another ingestion into this collection is running: {holder.describe()}; {what}. " \
           "Use --lock-timeout SECONDS to wait for it."


def run_file_stem(target: str, collection: str, worker: str = "") -> str:
    """``TARGET-COLLECTION[-WORKER]``: names a run's files (lock, default dead-letter file)."""
    return "-".join(filter(None, (target, collection, worker)))


def lock_dir() -> str:
    """The machine-wide folder of the default lock files."""
    return os.path.join(tempfile.gettempdir(), "clip-ingest-locks")


def default_lock_path(target: str, location: str, collection: str, worker: str = "") -> str:
    """A machine-wide lock file for ``collection`` at ``location`` (path or URL) on ``target``.

    ``worker`` (a shard label) gives each parallel worker of one collection its own lock.
    """
    key = f"{target}\0{location}\0{collection}" + (f"\0{worker}" if worker else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_file_stem(target, collection, worker))[:60]
    return os.path.join(lock_dir(), f"{safe}-{digest}.lock")


def read_holder(path: str | os.PathLike) -> LockHolder | None:
    """The live holder a lock file records (None: free, or left by a process that died)."""
    try:
        with open(path, encoding="utf-8") as fh:
            holder = LockHolder.parse(fh.read())
    except OSError:
        return None
    return holder if holder is not None and holder.is_alive() else None


def store_holder(target: str, location: str, collection: str | None = None) -> LockHolder | None:
    """A live process that keeps the embedded store at ``location`` open (``clip-search serve``),
    found among the default lock files: one serving ``collection``, or any collection when it is
    None (a Milvus Lite file is open in one process at a time, whichever collections it holds)."""
    for path in sorted(glob.glob(os.path.join(lock_dir(), "*.lock"))):
        holder = read_holder(path)
        if (holder is not None and holder.holds_store and (holder.target, holder.location) == (target, location)
                and collection in (None, holder.collection)):
            return holder
    return None


class RunLock:
    """Context manager holding an exclusive flock on ``path``.

    Args:
        path: the lock file (created if missing).
        timeout: seconds to wait for a running ingestion to finish; 0 fails at once.
        poll: seconds between attempts while waiting.
        command: recorded as the holder's command (``clip-ingest``, ``clip-search serve``).
        about: ``target``, ``location``, ``collection`` and ``holds_store``, recorded for
            :func:`store_holder` and ``clip-ingest status``.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 0.0, poll: float = 0.2, *,
                 command: str = "clip-ingest", about: dict[str, Any] | None = None) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.poll = poll
        self.command = command
        self.about = dict(about or {})
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
                    fh.seek(0)
                    holder = LockHolder.parse(fh.read())
                    fh.close()
                    raise LockedError(refusal(holder, f"lock file {self.path}"), holder) from None
                time.sleep(self.poll)
        holder = LockHolder(command=self.command, pid=os.getpid(), host=socket.gethostname(), started=now_iso(),
                            **self.about)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(asdict(holder)))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Mark the holder record released (the last holder stays readable), then unlock."""
        if self._fh is not None:
            self._fh.seek(0)
            record = json.loads(self._fh.read() or "{}")
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(json.dumps({**record, "released": now_iso()}))
            self._fh.flush()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
