"""What every benchmark shares: arguments, input images, targets, timing statistics and the report.

Absolute numbers on a shared machine are noisy, so every benchmark measures the
things it compares in one process, interleaved, and reports their ratios next to
the table; :func:`environment` records the load the numbers were taken under.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: env var naming a running Milvus server (shared with the test suite)
MILVUS_URI_ENV = "CLIP_INGEST_TEST_MILVUS_URI"
#: embedded targets, always measured; ``milvus-server`` is added when a URI is given
EMBEDDED_TARGETS = ("qdrant-edge", "qdrant-local", "milvus-lite")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class BenchmarkInputError(SystemExit):
    """A benchmark cannot run with the given input (missing folder, no images): exits with a message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def base_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: ``--smoke``, ``--json``, ``--milvus-uri``, ``--workdir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark still runs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--milvus-uri", default=os.environ.get(MILVUS_URI_ENV) or None,
        help=f"also measure this Milvus server (default: ${MILVUS_URI_ENV})",
    )
    parser.add_argument("--workdir", help="keep generated images and databases here (default: a temp folder)")
    return parser


def targets(milvus_uri: str | None) -> list[str]:
    """The targets to measure: the embedded ones, plus the Milvus server when a URI is given."""
    return list(EMBEDDED_TARGETS) + (["milvus-server"] if milvus_uri else [])


#: benchmark target -> (registry target, fixed store options): the embedded stores, qdrant-client's
#: local mode beside Qdrant Edge, and a Milvus server at --milvus-uri
_BACKEND_OF = {
    "qdrant-edge": ("qdrant-edge", {}),
    "qdrant-local": ("qdrant", {"client": True}),
    "milvus-lite": ("milvus", {}),
    "milvus-server": ("milvus", {}),
}


def open_target(
    target: str, root: Path, collection: str, milvus_uri: str | None = None, milvus_consistency: str = "Strong",
    timeout: float = 10.0,
):
    """A real, empty-or-existing store for ``target`` with its files under ``root``, opened through
    the backend registry as the CLI opens it.

    ``timeout`` bounds each Milvus request (the query benchmark raises it: a filtered search on
    Milvus Lite scans the JSON payloads and takes seconds at 100k points).
    """
    from clip_ingest.connectors.backends.registry import backend
    from clip_ingest.connectors.config import COMMON_SETTINGS, resolve_settings

    try:
        name, fixed = _BACKEND_OF[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}") from None
    if target == "milvus-server" and not milvus_uri:
        raise BenchmarkInputError(f"target milvus-server needs --milvus-uri or ${MILVUS_URI_ENV}")
    root.mkdir(parents=True, exist_ok=True)
    flags = {"target": name, "data_dir": str(root), "milvus_consistency": milvus_consistency,
             "qdrant_path": str(root / target) if name.startswith("qdrant") else None,
             "milvus_uri": milvus_uri if target == "milvus-server" else None}
    settings = resolve_settings(flags, COMMON_SETTINGS, section="benchmark", env={}, cwd=root)
    entry = backend(name)
    options = {k: v for k, v in entry.locate(name, settings).options.items() if v is not None}
    if name == "milvus":
        options["timeout"] = timeout
    return entry.open(name, collection, **options, **fixed)


def write_batch_bytes(target: str) -> int:
    """The write batch size the CLI uses for this target's backend."""
    from clip_ingest.connectors.backends.registry import backend

    return backend(_BACKEND_OF[target][0]).write_batch_bytes


@dataclass
class Workdir:
    """Scratch space: a given folder (kept) or a temporary one (removed by :meth:`close`)."""

    path: Path
    _tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def create(cls, given: str | None) -> "Workdir":
        if given:
            Path(given).mkdir(parents=True, exist_ok=True)
            return cls(Path(given))
        tmp = tempfile.TemporaryDirectory(prefix="clip-ingest-bench-")
        return cls(Path(tmp.name), tmp)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


# -- input images
def synthetic_image(index: int, size: int, rng: np.random.Generator):
    """A distinct RGB image: smooth gradient + coloured blocks + noise (compresses like a photo, not like a flat test card)."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 255 * rng.uniform(0.3, 1.0, size=3)
    blocks = rng.integers(0, 256, size=(8, 8, 3)).repeat(size // 8 + 1, 0).repeat(size // 8 + 1, 1)[:size, :size]
    noise = rng.normal(0, 12, size=(size, size, 3))
    pixels = np.clip(0.6 * base + 0.4 * blocks + noise, 0, 255).astype(np.uint8)
    pixels[0, 0] = [index % 256, (index >> 8) % 256, (index >> 16) % 256]  # distinct bytes for every index
    return Image.fromarray(pixels)


def generate_images(folder: Path, n: int, size: int = 256, fmt: str = "JPEG", seed: int = 0, start: int = 0) -> list[Path]:
    """Write ``n`` distinct images ``img_XXXXXX.jpg`` into ``folder`` (100 per sub-folder); returns their paths."""
    rng = np.random.default_rng(seed + start)
    ext = "jpg" if fmt == "JPEG" else fmt.lower()
    paths = []
    for i in range(start, start + n):
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img_{i:06d}.{ext}"
        synthetic_image(i, size, rng).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def real_images(source: str, n: int, into: Path) -> list[Path]:
    """The first ``n`` images (sorted) below ``source``, linked into ``into`` so a run sees exactly them.

    Raises :class:`BenchmarkInputError` when the folder is missing or holds no images.
    """
    root = Path(source)
    if not root.is_dir():
        raise BenchmarkInputError(f"--images {source}: folder not found (the real data sets live under /work/shared/data)")
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
            if len(found) == n:
                break
    if not found:
        raise BenchmarkInputError(f"--images {source}: no image files found")
    into.mkdir(parents=True, exist_ok=True)
    links = []
    for i, path in enumerate(found):
        link = into / f"{i // 100:04d}" / f"{i:06d}_{path.name}"
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(path.resolve())
        links.append(link)
    return links


def class_folders(into: Path, classes: int = 3, per_class: int = 4, size: int = 160) -> Path:
    """A small stand-in for Caltech-101 (``--smoke``): ``class_N/image_XXXX.jpg`` generated
    images, plus ``Faces`` and ``Faces_easy`` holding the same photos, the second a tight crop."""
    from PIL import Image

    for c in range(classes):
        for i, path in enumerate(generate_images(into / "tmp" / f"class_{c}", per_class, size=size, seed=c)):
            (into / f"class_{c}").mkdir(parents=True, exist_ok=True)
            path.rename(into / f"class_{c}" / f"image_{i + 1:04d}.jpg")
    for i, path in enumerate(generate_images(into / "tmp" / "faces", per_class, size=size, seed=99)):
        for folder, box in (("Faces", None), ("Faces_easy", (size // 5, size // 5, size - size // 5, size - size // 5))):
            (into / folder).mkdir(parents=True, exist_ok=True)
            image = Image.open(path)
            (image.crop(box).resize((size, size)) if box else image).save(into / folder / f"image_{i + 1:04d}.jpg", quality=92)
    shutil.rmtree(into / "tmp")
    return into


def input_images(images: str | None, n: int, into: Path, size: int = 256) -> tuple[list[Path], str]:
    """``n`` images from ``--images`` or generated; returns the paths and a description of the source."""
    if images:
        paths = real_images(images, n, into)
        return paths, f"{images} (first {len(paths)} images)"
    return generate_images(into, n, size=size), f"generated {size}x{size} JPEG"


# -- a competing CPU load
#: what each competing process runs: a single-threaded numpy loop that never sleeps
BUSY_LOOP = ("import numpy as np\n"
             "a = np.random.default_rng(0).random((200, 200))\n"
             "while True:\n    a = np.tanh(a @ a.T * 1e-3)\n")


@contextlib.contextmanager
def competing_load(processes: int | None = None) -> Iterator[int]:
    """Run ``processes`` (default: one per CPU this process may use) busy single-threaded numpy
    loops for the duration of the block, as other jobs of a shared machine would; yields their count."""
    count = processes or len(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        time.sleep(0.5)  # numpy imported: every loop is spinning
        yield count
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


# -- timing
def clock() -> float:
    return time.perf_counter()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = clock()
    result = fn()
    return clock() - start, result


def fixed_and_marginal(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """``(fixed seconds, marginal images/s)`` of the line through two ``(images, seconds)`` runs;
    ``(0, whole-run rate)`` when the larger run was not slower (too few images to tell)."""
    (n1, t1), (n2, t2) = small, large
    if t2 <= t1:
        return 0.0, n2 / t2
    marginal = (n2 - n1) / (t2 - t1)
    return t1 - n1 / marginal, marginal


def percentiles(samples: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``samples`` (linear interpolation)."""
    values = np.asarray(samples, dtype=np.float64)
    return {f"p{p}": float(np.percentile(values, p)) for p in points}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# -- the report
def environment() -> dict[str, Any]:
    """Machine, software and load at the time of the run (the numbers only mean something next to these)."""
    import torch

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table (numbers right-aligned; every key of any row is a column)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


@dataclass(frozen=True)
class Ratio:
    """A measured ratio and its target (``at_most`` says which side of the target passes)."""

    name: str
    value: float
    target: float | None = None
    at_most: bool = False

    @property
    def met(self) -> bool | None:
        if self.target is None or not np.isfinite(self.value):
            return None
        return self.value <= self.target if self.at_most else self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "target": self.target,
                "at_most": self.at_most, "met": self.met}

    def line(self) -> str:
        goal = "" if self.target is None else f"  target {'<=' if self.at_most else '>='} {self.target:g}"
        verdict = {None: "", True: "  OK", False: "  MISSED"}[self.met]
        return f"{self.name:<58} {self.value:8.3f}{goal}{verdict}"


def report(
    benchmark: str,
    config: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    ratios: Sequence[Ratio],
    json_path: str | None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Print every table and the ratios; write the JSON when asked; return the result document."""
    env = environment()
    print(f"# {benchmark}  ({env['date']}, {env['cpus']} CPUs, load {env['loadavg_1_5_15']}, torch threads {env['torch_threads']})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    for title, rows in tables.items():
        print(f"\n## {title}\n{format_table(rows)}")
    if ratios:
        print("\n## ratios")
        for ratio in ratios:
            print(ratio.line())
    for note in notes:
        print(f"note: {note}")
    sys.stdout.flush()
    result = {
        "benchmark": benchmark, "environment": env, "config": config, "tables": tables,
        "ratios": [r.as_dict() for r in ratios], "notes": list(notes),
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2, default=str))
    return result
