"""Helpers for the reliability tests: a numbered image corpus, CLI runs that can be killed at a
chosen moment, and the "exactly what is on disk, once" check of a collection.

CLI runs go through :func:`run_cli`. It starts ``clip-ingest``'s real ``main`` in a fresh process
forked from a multiprocessing *forkserver* that imported torch/open_clip once, so each run costs
the model load and the work, not 10-20 s of imports (the crash tests start dozens of runs on a
2-core machine). A run can be SIGKILLed by the test after a delay, or by itself at the N-th event
of a phase (:class:`KillPoint`), or made to wait at one (:class:`PausePoint`) so that a test can
stop a database server at a known moment, or have its database client fail writes
(:class:`ClientFaults`). :class:`Target` names the backends a test runs against. :func:`run_executable` runs the installed
``clip-ingest`` script in a subprocess and reports its own peak RSS (``os.wait4``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from clip_ingest.connectors.backends.base import VectorStore
from clip_ingest.connectors.ingest.ids import point_id

from conftest import embedded_options

TINY_MODEL = "clip-ingest-tiny:random"
PHASES = ("scan", "decode", "embed", "write", "prune")
"""Where a run can be stopped: file yielded by the scan, file read+decoded, model batch embedded,
store write (upsert or payload update) done, path removal (content change or ``--prune``) done."""
IMAGE_SIZE = 32
FOLDERS = 20
RUN_TIMEOUT_S = 300


# -- the corpus ----------------------------------------------------------------------------------


def numbered_image(index: int, version: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """A small RGB image whose bytes are unique to ``(index, version)`` (both encoded in pixels)."""
    rng = np.random.default_rng(index * 7919 + version)
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    pixels[0, :4] = np.frombuffer(struct.pack(">IIII", index, version, 0, 0)[:12], np.uint8).reshape(4, 3)
    return Image.fromarray(pixels)


def image_path(root: Path, index: int, folder: int | None = None) -> Path:
    return root / f"d{(index if folder is None else folder) % FOLDERS:02d}" / f"img_{index:05d}.png"


def write_numbered(root: Path, index: int, version: int = 0, folder: int | None = None) -> Path:
    """Write image ``index`` (content ``version``) and its ``IMAGE.png.json`` sidecar."""
    path = image_path(root, index, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    numbered_image(index, version).save(path, "PNG")
    Path(f"{path}.json").write_text(json.dumps({"index": index, "version": version}))
    return path


def write_corpus(root: Path, n: int) -> Path:
    """``n`` distinct images in :data:`FOLDERS` sub-folders, with sidecars."""
    for index in range(n):
        write_numbered(root, index)
    return root


def move_image(path: Path, folder: int) -> Path:
    """Move an image and its sidecar into sub-folder ``folder``."""
    target = path.parent.parent / f"d{folder % FOLDERS:02d}" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    Path(f"{path}.json").rename(f"{target}.json")
    return target


def delete_image(path: Path) -> None:
    path.unlink()
    Path(f"{path}.json").unlink()


def on_disk(root: Path) -> dict[str, dict[str, Any]]:
    """What a complete ingestion of ``root`` must hold: path -> expected payload facts."""
    expected = {}
    for path in sorted(root.rglob("*.png")):
        data = path.read_bytes()
        st = path.stat()
        expected[str(path)] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            **json.loads(Path(f"{path}.json").read_text()),
        }
    return expected


def assert_exactly_once(store: VectorStore, root: Path, collection: str, model_id: str | None = None) -> None:
    """The collection holds every image under ``root`` exactly once and nothing else.

    Checks: one point per distinct content, ids = ``point_id(collection, sha256)`` and unique,
    every sha256 once, every path once (and only paths that exist), and each payload's facts
    (size, mtime, sha256, size in pixels, format, sidecar metadata, model) match the file.
    """
    expected = on_disk(root)
    points = list(store.scroll())
    ids = [p.id for p in points]
    assert len(ids) == len(set(ids)), "duplicate point ids"
    shas = [p.payload["sha256"] for p in points]
    assert len(shas) == len(set(shas)), "a content is stored twice"
    listed = [path for p in points for path in p.payload["paths"]]
    assert len(listed) == len(set(listed)), "a path is listed by two points"
    assert sorted(listed) == sorted(expected), (
        f"missing {sorted(set(expected) - set(listed))[:5]}, extra {sorted(set(listed) - set(expected))[:5]}"
    )
    assert len(points) == len({e["sha256"] for e in expected.values()}) == store.count()
    for point in points:
        payload = point.payload
        assert point.id == point_id(collection, payload["sha256"])
        assert payload["path"] == payload["paths"][0]
        assert len(payload["mtimes_ns"]) == len(payload["paths"])
        for path, mtime_ns in zip(payload["paths"], payload["mtimes_ns"]):
            facts = expected[path]
            assert (payload["sha256"], payload["size"], mtime_ns) == (facts["sha256"], facts["size"], facts["mtime_ns"]), path
        facts = expected[payload["path"]]
        assert (payload["index"], payload["version"]) == (facts["index"], facts["version"]), payload["path"]
        assert (payload["width"], payload["height"], payload["format"]) == (IMAGE_SIZE, IMAGE_SIZE, "PNG")
        if model_id is not None:
            assert payload["model_id"] == model_id


# -- killing and pausing a run -------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the run right after its ``count``-th event of ``phase`` (one of :data:`PHASES`)."""

    phase: str
    count: int


@dataclass(frozen=True)
class PausePoint:
    """At the ``count``-th event of ``phase``, create ``reached`` and wait until ``resume`` exists."""

    phase: str
    count: int
    reached: str
    resume: str


@dataclass(frozen=True)
class DeleteBeforeRead:
    """Delete the ``count``-th file handed to the decode stage just before it opens it."""

    count: int


@dataclass(frozen=True)
class ClientFaults:
    """Wrap the real database client inside the run's store in :class:`FlakyClient`.

    ``rate`` and ``outage``: see :class:`FaultSchedule`. ``qdrant_client=True`` also sends
    ``--target qdrant`` through qdrant-client (local mode in the ``--qdrant-path`` folder)
    instead of Qdrant Edge: the code path of a Qdrant server, and its client's errors.
    """

    seed: int
    rate: float = 0.0
    outage: tuple[int, int] | None = None
    qdrant_client: bool = False


@dataclass(frozen=True)
class StallRead:
    """Reading a file whose name ends with ``name`` hangs for good (a stalled network mount), after
    creating ``reached``: what a read blocked in the kernel looks like from Python."""

    name: str
    reached: str


Hook = KillPoint | PausePoint | DeleteBeforeRead | ClientFaults | StallRead
Action = Callable[[], None]


def _install_event_hooks(phase: str, count: int, action: Action) -> None:
    """Call ``action`` once, right after the ``count``-th event of ``phase`` in this process."""
    import threading

    from clip_ingest.connectors.ingest import scan, stages, writer

    seen = [0]
    guard = threading.Lock()

    def tick() -> None:
        with guard:
            seen[0] += 1
            fire = seen[0] == count
        if fire:
            action()

    def after(cls: type, name: str, counts: Callable[..., bool] = lambda *a: True) -> None:
        original = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if counts(*args):
                tick()
            return result

        setattr(cls, name, wrapped)

    if phase == "scan":
        original_iter = scan.Scan.__iter__

        def walking(self):
            for file in original_iter(self):
                tick()
                yield file

        scan.Scan.__iter__ = walking
    elif phase == "decode":
        after(stages.DecodeStage, "__call__")
    elif phase == "embed":
        after(stages.ImageEncoder, "embed")
    elif phase == "write":
        after(writer.Writer, "_call", lambda fn, *a: getattr(fn, "__name__", "") in ("upsert", "set_payloads"))
    elif phase == "prune":
        after(writer.Writer, "_remove_paths")
    else:
        raise ValueError(f"unknown phase {phase!r}")


def _install(hook: Hook | None) -> None:
    """Apply a hook inside a forked run (before ``main`` runs)."""
    if isinstance(hook, KillPoint):
        _install_event_hooks(hook.phase, hook.count, _kill_self)
    elif isinstance(hook, PausePoint):
        _install_event_hooks(hook.phase, hook.count, _pause(hook))
    elif isinstance(hook, DeleteBeforeRead):
        from clip_ingest.connectors.ingest import stages

        original, seen = stages.DecodeStage.__call__, [0]

        def vanishing(self, candidate):
            seen[0] += 1
            if seen[0] == hook.count:
                os.unlink(candidate.file.path)
            return original(self, candidate)

        stages.DecodeStage.__call__ = vanishing
    elif isinstance(hook, ClientFaults):
        _install_client_faults(hook)
    elif isinstance(hook, StallRead):
        install_stalled_read(hook.name, hook.reached)


def install_stalled_read(name: str, reached: str | None = None) -> Callable[[], None]:
    """Make reads of files named ``*name`` hang (until the returned ``release`` is called)."""
    import threading

    from clip_ingest.connectors.ingest import reader

    original, released = reader.read_file, threading.Event()

    def stalling(path: str) -> bytes:
        if path.endswith(name):
            if reached:
                Path(reached).write_text(str(os.getpid()))
            released.wait()
        return original(path)

    reader.read_file = stalling

    def release() -> None:
        released.set()
        reader.read_file = original

    return release


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _pause(point: PausePoint) -> Action:
    def wait() -> None:
        Path(point.reached).write_text(str(os.getpid()))
        while not os.path.exists(point.resume):
            time.sleep(0.05)

    return wait


# -- running the CLI ------------------------------------------------------------------------------


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test run: ours without CLIP_INGEST_*, one thread, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_INGEST_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    """How a run ended: ``exit_code`` (negative: killed by that signal) and its output."""

    exit_code: int
    stdout: str
    stderr: str
    max_rss_kib: int = 0

    @property
    def killed(self) -> bool:
        return self.exit_code == -signal.SIGKILL

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _child(args: Sequence[str], cwd: str, env: Mapping[str, str], hook: Hook | None, out: str, err: str) -> None:
    """Body of a forked run: redirect output, install the hook, run ``clip-ingest``'s main."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, name in ((1, out), (2, err)):
        handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    _install(hook)
    from clip_ingest.connectors.cli.clip_ingest import main

    try:
        main.main(args=list(args), prog_name="clip-ingest")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


_CONTEXT: multiprocessing.context.BaseContext | None = None


def _context() -> multiprocessing.context.BaseContext:
    """The forkserver context; its server imports the heavy modules once per test session."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([
            "reliability_helpers", "torch", "open_clip", "clip_ingest.connectors.cli.clip_ingest",
            "clip_ingest.connectors.ingest.pipeline", "clip_ingest.connectors.openclip_embedder",
        ])
        _CONTEXT = ctx
    return _CONTEXT


class CliRun:
    """A ``clip-ingest`` run in progress (see :func:`start_cli`)."""

    def __init__(self, process: multiprocessing.process.BaseProcess, out: Path, err: Path) -> None:
        self.process = process
        self._out, self._err = out, err

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> CliResult:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
            raise AssertionError(f"clip-ingest did not finish in {timeout}s:\n{self._err.read_text()[-3000:]}")
        return CliResult(self.process.exitcode, self._out.read_text(errors="replace"), self._err.read_text(errors="replace"))


def start_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    hook: Hook | None = None,
    model: str = TINY_MODEL,
) -> CliRun:
    """Start ``clip-ingest [migrate] --model MODEL --workers 1 ARGS`` in ``cwd`` (a forked process)."""
    n = len(list(cwd.glob("run-*.out")))
    out, err = cwd / f"run-{n}.out", cwd / f"run-{n}.err"
    command = [args[0]] if args and args[0] == "migrate" else []  # the subcommand comes first
    full = [*command, "--model", model, "--workers", "1", *args[len(command):]]
    process = _context().Process(target=_child, args=(full, str(cwd), cli_env(env), hook, str(out), str(err)))
    process.start()
    return CliRun(process, out, err)


def run_cli(args: Sequence[str], cwd: Path, **kwargs: Any) -> CliResult:
    """:func:`start_cli` and wait for the end."""
    return start_cli(args, cwd, **kwargs).wait()


def _reaped(pid: int, *, block: bool) -> tuple[int, Any] | None:
    """``(wait status, rusage)`` of an ended child, None while it runs (polls every 20 ms)."""
    done, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    if not done:
        time.sleep(0.02)
        return None
    return status, usage


def run_executable(args: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None,
                   prefix: Sequence[str] = (), kill_after: tuple[Path, float] | None = None) -> CliResult:
    """Run the installed ``clip-ingest`` script; ``prefix`` runs it through e.g. ``setpriv``.

    ``kill_after=(file, seconds)``: SIGKILL it ``seconds`` after ``file`` appears (or at once
    if it ends first). ``max_rss_kib`` is this process's own peak resident memory (``os.wait4``).
    """
    exe = Path(sys.executable).with_name("clip-ingest")
    with open(cwd / "exe.out", "wb") as out, open(cwd / "exe.err", "wb") as err:
        proc = subprocess.Popen([*prefix, str(exe), "--model", TINY_MODEL, "--workers", "1", *args],
                                cwd=cwd, env=cli_env(env), stdout=out, stderr=err)
        ended = None  # (wait status, rusage); Popen.poll() would reap the process and lose its rusage
        if kill_after is not None:
            marker, delay = kill_after
            while ended is None and not marker.exists():
                ended = _reaped(proc.pid, block=False)
            deadline = time.monotonic() + delay
            while ended is None and time.monotonic() < deadline:
                ended = _reaped(proc.pid, block=False)
            if ended is None:
                proc.kill()
        status, usage = ended or _reaped(proc.pid, block=True)
        proc.returncode = os.waitstatus_to_exitcode(status)
    read = lambda name: (cwd / name).read_bytes().decode("utf-8", "replace")  # noqa: E731
    return CliResult(proc.returncode, read("exe.out"), read("exe.err"), usage.ru_maxrss)


def _forked_call(fn: Callable[..., None], args: tuple, err: str) -> None:
    try:
        fn(*args)
    except BaseException:
        import traceback

        Path(err).write_text(traceback.format_exc())
        os._exit(1)


def run_forked(fn: Callable[..., None], *args: Any, timeout: float = RUN_TIMEOUT_S) -> None:
    """Call the module-level ``fn(*args)`` in a forked process; re-raise its failure here.

    Used to read an embedded store: Milvus Lite keeps its data folder locked by the process that
    opened it until that process exits, even after ``close()``, which would block the next run.
    """
    err = Path(os.environ.get("TMPDIR", "/tmp")) / f"forked-{os.getpid()}-{time.monotonic_ns()}.err"
    process = _context().Process(target=_forked_call, args=(fn, args, str(err)))
    process.start()
    process.join(timeout)
    try:
        if process.exitcode != 0:
            raise AssertionError(err.read_text() if err.exists() else f"forked check ended with {process.exitcode}")
    finally:
        err.unlink(missing_ok=True)


def check_store(target: str, options: Mapping[str, Any], collection: str, root: Path, model_id: str | None) -> None:
    """Open ``collection`` and :func:`assert_exactly_once` on it (meant for :func:`run_forked`)."""
    from clip_ingest.connectors.backends import open_store

    with open_store(target, collection, **options) as store:
        assert_exactly_once(store, root, collection, model_id)


#: the targets under test -> the registry target each runs on
_ON = {"qdrant": "qdrant", "qdrant-client": "qdrant", "milvus-lite": "milvus", "milvus-server": "milvus"}


class Target:
    """One backend under test: the CLI arguments that reach it and a check of its collection.

    ``name``: ``qdrant`` (Qdrant Edge, the embedded default), ``qdrant-client`` (qdrant-client
    local mode, the code path of a Qdrant server; reached through :class:`ClientFaults`),
    ``milvus-lite`` or ``milvus-server`` (``server_uri`` required; a fresh collection each time).
    The embedded ones live where the CLI puts them under ``--data-dir data``.
    """

    def __init__(self, name: str, data: Path, server_uri: str | None = None) -> None:
        if name not in _ON or (name == "milvus-server") != bool(server_uri):
            raise ValueError(f"unknown target {name!r} (milvus-server needs server_uri)")
        self.name, self.collection, target = name, "images", _ON[name]
        self.args = ["--target", target, "--data-dir", str(data)]
        options: dict[str, Any] = embedded_options(target, data)
        if name == "qdrant-client":
            options["client"] = True
        if server_uri:
            self.collection = f"t_{uuid.uuid4().hex[:12]}"
            self.args += ["--milvus-uri", server_uri, "--collection", self.collection]
            options = {"uri": server_uri}
        self._open = (target, options)

    @classmethod
    def for_param(cls, request: Any, tmp_path: Path) -> "Target":
        """The target a parametrized pytest fixture names (``milvus-server`` uses the session's server)."""
        server_uri = request.getfixturevalue("milvus_server").uri if request.param == "milvus-server" else None
        return cls(request.param, tmp_path / "data", server_uri)

    def faults(self, seed: int, rate: float = 0.0, outage: tuple[int, int] | None = None) -> ClientFaults:
        """A :class:`ClientFaults` hook for this target (the only way to reach ``qdrant-client``)."""
        return ClientFaults(seed, rate, outage, qdrant_client=self.name == "qdrant-client")

    def check(self, root: Path, model_id: str | None = None) -> None:
        """:func:`check_store` in another process (Milvus Lite locks its folder until exit)."""
        target, options = self._open
        run_forked(check_store, target, options, self.collection, root, model_id)


def wait_for_file(path: Path, run: CliRun, timeout: float = RUN_TIMEOUT_S) -> None:
    """Wait until ``path`` exists; fail early if the run ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not run.process.is_alive():
            raise AssertionError(f"the run ended (exit {run.process.exitcode}) before reaching {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} not reached in {timeout}s")
        time.sleep(0.05)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- store faults -------------------------------------------------------------------------------


class FaultSchedule:
    """Which write calls of a run fail, shared by every client the run opens.

    Each write fails with probability ``rate`` (seeded), half of those *after* the real call was
    applied (a lost reply: the retry repeats a write that already happened); write calls number
    ``outage[0]`` to ``outage[0] + outage[1] - 1`` all fail (a dead server for that many attempts).
    """

    def __init__(self, seed: int, rate: float, outage: tuple[int, int] | None) -> None:
        self.rng = np.random.default_rng(seed)
        self.rate = rate
        self.outage = outage
        self.writes = 0

    def next(self, name: str) -> tuple[str | None, str | None]:
        """(why this call fails before it is applied, why it fails after), each None if it does not."""
        self.writes += 1
        if self.outage and self.outage[0] <= self.writes < self.outage[0] + self.outage[1]:
            return f"injected outage: {name} call {self.writes}", None
        failing = self.rng.random() < self.rate
        after = self.rng.random() < 0.5
        if not failing:
            return None, None
        if after:
            return None, f"injected: {name} call {self.writes} applied, reply lost"
        return f"injected: {name} call {self.writes} refused", None


class FlakyClient:
    """A real database client (QdrantClient, EdgeShard, MilvusClient) whose write methods fail.

    A failing call raises ``error(reason)``: the exception that client raises when its server or
    disk fails, so the store's own error translation and the run's retries are what is tested.
    Every other attribute is the real client's.
    """

    def __init__(self, inner: Any, writes: Sequence[str], error: Callable[[str], Exception], schedule: FaultSchedule) -> None:
        self._inner, self._writes, self._error, self._schedule = inner, frozenset(writes), error, schedule

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._writes:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            before, after = self._schedule.next(name)
            if before:
                raise self._error(before)
            result = attribute(*args, **kwargs)
            if after:
                raise self._error(after)
            return result

        return write


def qdrant_client_error(reason: str) -> Exception:
    """What qdrant-client raises when a Qdrant server refuses the connection (REST)."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    return ResponseHandlingException(httpx.ConnectError(f"[Errno 111] Connection refused ({reason})"))


def milvus_client_error(reason: str) -> Exception:
    """What pymilvus raises when its own gRPC retries against an unreachable server run out."""
    import grpc
    from pymilvus.exceptions import MilvusException

    return MilvusException(grpc.StatusCode.UNAVAILABLE, f"Retry run out of 75 retry times, failed to connect to all addresses ({reason})")


def edge_error(reason: str) -> Exception:
    """What Qdrant Edge raises when its storage fails (a plain exception: nothing to retry in-process)."""
    return RuntimeError(f"Service internal error: No space left on device (os error 28) ({reason})")


def _install_client_faults(faults: ClientFaults) -> None:
    """Wrap each store's client in a :class:`FlakyClient` as soon as the store has one."""
    from clip_ingest.connectors.backends import qdrant
    from clip_ingest.connectors.backends.milvus.store import MilvusStore
    from clip_ingest.connectors.backends.qdrant.client_store import QdrantClientStore
    from clip_ingest.connectors.backends.qdrant.edge_store import QdrantEdgeStore

    schedule = FaultSchedule(faults.seed, faults.rate, faults.outage)

    def wrap(cls: type, method: str, attribute: str, writes: Sequence[str], error: Callable[[str], Exception]) -> None:
        original = getattr(cls, method)

        def wrapped(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            client = getattr(self, attribute, None)
            if client is None or isinstance(client, FlakyClient):
                return result
            flaky = FlakyClient(client, writes, error, schedule)
            setattr(self, attribute, flaky)
            return flaky if result is client else result

        setattr(cls, method, wrapped)

    # a server client is made by __init__, local mode's when its folder exists or is created
    for method in ("__init__", "_open_local"):
        wrap(QdrantClientStore, method, "_qdrant", ("upsert", "batch_update_points", "delete"),
             qdrant_client_error)
    wrap(QdrantEdgeStore, "_open", "_shard", ("update",), edge_error)
    wrap(MilvusStore, "_conn", "_client", ("upsert", "delete"), milvus_client_error)
    if faults.qdrant_client:
        qdrant.open_qdrant = functools.partial(qdrant.open_qdrant, client=True)  # target qdrant: qdrant-client


# -- awkward inputs not in badfiles.py ---------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid ``side`` x ``side`` 1-bit black PNG, written row by row (a few hundred KB on disk)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def dead_letter_reasons(records: Iterable[Mapping[str, Any]], root: Path) -> dict[str, str]:
    """Dead-letter records -> ``{path relative to root: reason}``."""
    return {os.path.relpath(r["path"], root): r["reason"] for r in records}


__all__ = [
    "CliResult", "CliRun", "ClientFaults", "DeleteBeforeRead", "FaultSchedule", "FlakyClient", "KillPoint", "Target", "check_store", "run_forked", "PHASES", "PausePoint", "StallRead", "install_stalled_read", "TINY_MODEL", "assert_exactly_once", "cli_env",
    "dead_letter_reasons", "delete_image", "move_image", "numbered_image", "on_disk", "read_json", "run_cli",
    "run_executable", "start_cli", "wait_for_file", "write_corpus", "write_numbered", "write_png_bomb",
]
