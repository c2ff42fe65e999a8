"""File reads with a time limit, so one file on a stalled mount fails alone instead of hanging the run.

A read blocked in the kernel (a hung NFS or SMB server, a dying disk) cannot be interrupted
from Python. :class:`TimedReader` therefore reads in its own daemon threads and waits at most
``timeout`` seconds for each file: a read that takes longer is reported as
:class:`ReadTimeout`, its thread is written off (replaced by a fresh one so capacity stays the
same) and, being a daemon, never keeps the process from exiting. The decode workers, and with
them Ctrl-C / SIGTERM handling and the run lock, are therefore never stuck behind a file.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from . import objectstore
from .scan import os_path

#: default limit for reading one file (seconds)
DEFAULT_READ_TIMEOUT_S = 60.0


class ReadTimeout(OSError):
    """Reading a file took longer than the limit (its thread is abandoned)."""


def read_file(path: str) -> bytes:
    """The bytes of a local file or of an object-store URI (``s3://…``)."""
    if objectstore.is_uri(path):
        return objectstore.read(path)
    with open(path, "rb") as fh:
        return fh.read()


def read_stored(path: object) -> bytes | None:
    """The bytes behind a stored ``path`` payload (a local file, escaped names included, or an
    object-store URI); ``None`` when there is no such path or it cannot be read any more."""
    if not isinstance(path, str):
        return None
    try:
        return read_file(path if objectstore.is_uri(path) else os_path(path))
    except OSError:
        return None


class TimedReader:
    """Read files in ``threads`` daemon threads, each read bounded by ``timeout`` seconds.

    ``read`` reads one path (default: :func:`read_file`, looked up at each call so that a
    failure-injection test can replace it with one that stalls).
    """

    def __init__(self, threads: int, timeout: float = DEFAULT_READ_TIMEOUT_S, read: Callable[[str], bytes] | None = None) -> None:
        if threads < 1 or timeout <= 0:
            raise ValueError("threads must be >= 1 and timeout > 0")
        self.timeout = timeout
        self._read = read
        self._jobs: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._waiting: set[Future] = set()
        self.abandoned = 0
        for _ in range(threads):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._threads += 1
        threading.Thread(target=self._work, name="clip-ingest-read", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            path, future = job
            try:
                if not future.set_running_or_notify_cancel():
                    continue
            except RuntimeError:  # settled while queued (abort() failed it): nothing to read
                continue
            try:
                data = (self._read or read_file)(path)
            except BaseException as exc:  # handed to the waiting caller
                _settle(future, exception=exc)
            else:
                _settle(future, result=data)

    def read(self, path: str) -> bytes:
        """The bytes of ``path``; :class:`ReadTimeout` after ``timeout`` s, other ``OSError`` as raised."""
        future: Future = Future()
        with self._lock:
            self._waiting.add(future)
        self._jobs.put((path, future))
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            if future.cancel():  # never started (all threads busy): not a stuck thread
                raise ReadTimeout(f"no reader was free within {self.timeout:g}s") from None
            with self._lock:
                self.abandoned += 1
            self._spawn()  # the stuck thread is written off; keep the capacity
            raise ReadTimeout(f"reading took over {self.timeout:g}s (a stalled network mount or disk?)") from None
        finally:
            with self._lock:
                self._waiting.discard(future)

    def abort(self) -> None:
        """Make every read that is waiting fail at once (the run is being stopped: Ctrl-C, SIGTERM),
        so no decode worker keeps the run from ending while a read hangs."""
        with self._lock:
            waiting = list(self._waiting)
        for future in waiting:
            _settle(future, exception=ReadTimeout("the run was stopped while this file was being read"))

    def close(self) -> None:
        """Stop the threads that are idle; stuck ones are daemons and end with the process."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)


def _settle(future: Future, *, result: bytes | None = None, exception: BaseException | None = None) -> None:
    """Complete ``future`` unless it already is (an aborted read whose thread comes back later)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


__all__ = ["DEFAULT_READ_TIMEOUT_S", "ReadTimeout", "TimedReader", "read_file"]
