"""``clip-ingest --executor ray`` (a real local Ray instance, 2 CPUs, running the Ray Data
pipeline) and ``--executor processes`` (decode worker processes), against real Qdrant Edge, Milvus
Lite and the Milvus server ``.ci/run`` starts. The same folder ingested by the local executor and
by another must give the same collection: ids, payloads, paths, vectors and dead letters; re-runs
are incremental; a killed Ray worker costs no image; a stopped run ends its decode processes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from clip_ingest.connectors.backends import open_store  # noqa: E402
from clip_ingest.connectors.cli.ingest import main as ingest_main  # noqa: E402
from clip_ingest.connectors.ingest.ids import point_id  # noqa: E402
from clip_ingest.connectors.ingest.metadata import MetadataLimits  # noqa: E402

from badfiles import write_bad_corpus  # noqa: E402
from conftest import TINY_SPEC  # noqa: E402
from imagegen import make_shape_image, write_shape_folder  # noqa: E402
from milvus_server import milvus_uri  # noqa: E402

VOLATILE = {"ingested_at"}  # the time a point was written: the only payload field allowed to differ


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module (workers start in seconds once it runs)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # the failure-injection factory below must reach Ray workers that cannot import tests/
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _target(backend: str, tmp_path: Path, request, name: str) -> tuple[list[str], str, dict]:
    data = tmp_path / name
    if backend == "qdrant-edge":
        return ["--target", "qdrant-edge", "--data-dir", str(data)], "qdrant-edge", {"path": str(data / "qdrant-edge")}
    uri = milvus_uri(request, backend == "milvus-server", tmp_path / f"{name}.db")
    return ["--target", "milvus", "--milvus-uri", uri, "--data-dir", str(data)], "milvus", {"uri": uri}


def _ingest(folder: Path, args: list[str], collection: str, summary: Path, *extra: str) -> dict:
    result = CliRunner().invoke(ingest_main, [str(folder), *args, "--collection", collection, "--model", TINY_SPEC,
                                              "--batch-size", "4", "--summary", str(summary), "-q", *extra])
    assert result.exit_code in (0, 3), result.output
    return json.loads(summary.read_text())


def _collection(target: str, options: dict, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    """Primary path -> (payload without the write time, vector); every id checked to be the
    content-addressed ``point_id(collection, sha256)`` (ids include the collection name, and the
    Milvus-server case needs two names on one server)."""
    with open_store(target, collection, **options) as store:
        points = store.retrieve([p.id for p in store.scroll(fields=[])], with_vectors=True)
    for p in points:
        assert p.id == point_id(collection, p.payload["sha256"]), p.payload["path"]
    return {p.payload["path"]: ({k: v for k, v in p.payload.items() if k not in VOLATILE},
                                np.asarray(p.vector, dtype=np.float32)) for p in points}


def _assert_same(local: dict, ray_made: dict) -> None:
    assert local.keys() == ray_made.keys()
    for path, (payload, vector) in local.items():
        other_payload, other_vector = ray_made[path]
        assert other_payload == payload, path
        assert np.allclose(other_vector, vector, atol=1e-5), path


def _dead_letters(summary: dict) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in Path(summary["dead_letter"]).read_text().splitlines()]
    return sorted((Path(r["path"]).name, r["reason"]) for r in rows)


@pytest.mark.parametrize("backend, other", [("qdrant-edge", "ray"), ("milvus-lite", "ray"),
                                            pytest.param("milvus-server", "ray", marks=pytest.mark.milvus_server),
                                            ("qdrant-edge", "processes"), ("milvus-lite", "processes")])
def test_local_and_other_executors_build_the_same_collection_and_stay_incremental(backend, other, tmp_path, request):
    folder = write_shape_folder(tmp_path / "photos", n=10)
    images = sorted(folder.rglob("*.png"))
    shutil.copy(images[0], folder / "copy-of-first.png")  # one content, two paths
    bad = write_bad_corpus(folder / "bad")  # bad files in the middle of the listing
    collection = f"ex_{uuid.uuid4().hex[:8]}"
    runs = {}
    for executor in ("local", other):
        args, target, options = _target(backend, tmp_path, request, executor)
        name = collection + ("_r" if executor != "local" and backend == "milvus-server" else "")
        first = _ingest(folder, args, name, tmp_path / f"{executor}-1.json", "--executor", executor)
        runs[executor] = (args, target, options, name, first)
    (_, lt, lo, ln, local_first), (ray_args, rt, ro, rn, ray_first) = runs["local"], runs[other]
    for key in ("new", "embedded", "failed", "moved", "updated"):
        assert ray_first[key] == local_first[key], key
    assert ray_first["new"] == 11 and ray_first["embedded"] == 10 and ray_first["failed"] == len(bad) - 1  # folder.jpg is no file
    assert _dead_letters(ray_first) == _dead_letters(local_first)
    _assert_same(_collection(lt, lo, ln), _collection(rt, ro, rn))

    again = _ingest(folder, ray_args, rn, tmp_path / "other-2.json", "--executor", other)
    assert again["embedded"] == 0 and again["new"] == 0 and again["unchanged"] == 11  # zero model calls

    # modify one, move one, delete one, add one; then --prune with each executor
    first, second, third = images[1:4]
    make_shape_image("blue", "star", size=64, variant=9).save(first)
    second.rename(folder / "moved.png")
    third.unlink()
    make_shape_image("green", "square", size=64, variant=7).save(folder / "new.png")
    after = {}
    for executor, (args, target, options, name, _) in runs.items():
        after[executor] = _ingest(folder, args, name, tmp_path / f"{executor}-3.json", "--executor", executor, "--prune")
        assert (after[executor]["updated"], after[executor]["moved"], after[executor]["new"]) == (1, 1, 1)
        assert after[executor]["embedded"] >= 1 and after[executor]["pruned"] >= 1
    for key in ("embedded", "pruned", "points_deleted", "unchanged", "failed"):
        assert after[other][key] == after["local"][key], key
    ray_points = _collection(rt, ro, rn)
    _assert_same(_collection(lt, lo, ln), ray_points)
    listed = sorted(path for payload, _ in ray_points.values() for path in payload["paths"])
    assert listed == sorted(set(listed)) and len(listed) == 11  # every path once; one point per content


class _DiesOnce:
    """Failure injection only: the real embedder, whose process exits in its first embedding call
    while ``marker`` exists (the marker is removed first, so the restarted worker goes on)."""

    def __init__(self, marker: str, device: str | None = None) -> None:
        from clip_ingest.connectors.runtime import load_embedder

        self.inner = load_embedder(TINY_SPEC, device=device, batch_size=4)
        self.marker = marker
        self.preparer, self.dim, self.model_id = self.inner.preparer, self.inner.dim, self.inner.model_id

    def embed_pixels(self, pixels):
        if os.path.exists(self.marker):
            os.remove(self.marker)
            os._exit(1)  # the worker process dies mid-batch, as a preempted node would
        return self.inner.embed_pixels(pixels)


def test_a_worker_killed_mid_run_costs_no_image(tmp_path, tiny_embedder):
    import functools

    from clip_ingest.connectors.ingest.ray_executor import RayExecutor

    from ingest_helpers import all_paths, ingest

    folder = write_shape_folder(tmp_path / "photos", n=16)
    marker = tmp_path / "kill-me"
    marker.write_text("")
    executor = RayExecutor(functools.partial(_DiesOnce, str(marker)), batch_size=4, embed_workers=1)
    with open_store("qdrant-edge", "images", path=str(tmp_path / "edge")) as store:
        stats = ingest(store, tiny_embedder, folder, executor=executor, batch_size=4)
        assert not marker.exists()  # the worker did die
        assert (stats.new, stats.embedded, stats.failed) == (16, 16, 0)
        paths = all_paths(store)
        assert len(paths) == 16 == len(set(paths))
        again = ingest(store, tiny_embedder, folder, executor=executor, batch_size=4)
        assert (again.embedded, again.unchanged) == (0, 16)


def test_a_stopped_run_ends_its_decode_processes_at_once(tmp_path, tiny_embedder):
    """Closing the results early (what Ctrl-C or SIGTERM does to a run) cancels the queued chunks
    and ends every worker process; an embedder without a picklable input path is refused."""
    import multiprocessing
    import time

    from clip_ingest.connectors.ingest.plan import Planner
    from clip_ingest.connectors.ingest.process_executor import ProcessExecutor
    from clip_ingest.connectors.ingest.scan import Scan
    from clip_ingest.connectors.ingest.stages import DecodeStage, ImageEncoder, Loaded
    from clip_ingest.connectors.ingest.state import StoredState

    folder = write_shape_folder(tmp_path / "photos", n=40)
    state = StoredState()
    decode = DecodeStage(ImageEncoder(tiny_embedder), "c", state)
    blocks_before = _shared_memory_blocks()
    results = ProcessExecutor(workers=2, chunk=2).results(Planner(Scan([str(folder)], on_problem=lambda p: None), state), decode)
    first = next(results)
    assert isinstance(first, Loaded) and first.pixels is not None and type(first.pixels).__module__ == "torch"
    assert first.decoded is not None and first.decoded.image is None and first.decoded.width == 64  # facts, not pixels
    assert len(multiprocessing.active_children()) == 2
    assert len(_shared_memory_blocks() - blocks_before) == 4  # one block per task in flight
    started = time.monotonic()
    results.close()
    while multiprocessing.active_children() and time.monotonic() - started < 10:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [], "the decode processes outlived the run"
    assert _shared_memory_blocks() - blocks_before == set(), "the run left shared memory behind"

    class NoInputPath:  # failure injection only: an embedder that only takes decoded images
        dim, model_id = tiny_embedder.dim, tiny_embedder.model_id
        embed_images = tiny_embedder.embed_images

    with pytest.raises(ValueError, match="--executor local"):
        next(ProcessExecutor().results([], DecodeStage(ImageEncoder(NoInputPath()), "c", state)))


def _shared_memory_blocks() -> set[str]:
    """The POSIX shared-memory blocks of this machine (``multiprocessing.shared_memory`` names)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


def test_decode_worker_inputs_cross_in_shared_memory_and_what_does_not_fit_travels_pickled(tmp_path, tiny_embedder):
    """The worker's function run in this process: the inputs that fit the block come back
    through it, bit-identical to a local decode; the rest come back pickled, equally exact."""
    from dataclasses import replace

    from clip_ingest.connectors.ingest import process_executor as pe
    from clip_ingest.connectors.ingest.plan import Planner
    from clip_ingest.connectors.ingest.scan import Scan
    from clip_ingest.connectors.ingest.stages import DecodeStage, ImageEncoder
    from clip_ingest.connectors.ingest.state import StoredState

    folder = write_shape_folder(tmp_path / "photos", n=5)
    state = StoredState()
    candidates = list(Planner(Scan([str(folder)], on_problem=lambda p: None), state))
    local = DecodeStage(ImageEncoder(tiny_embedder), "c", state)
    expected = [local(c).pixels.numpy() for c in candidates]
    preparer = replace(tiny_embedder.preparer, as_numpy=True)
    one_input = expected[0].nbytes
    blocks = pe._Blocks(1, 3 * one_input)  # room for three of the five
    try:
        pe._start_worker(preparer, "c", state, True, 5.0, MetadataLimits())
        name = blocks.take()
        results, block, layout = pe._decode_chunk((candidates, name))
        assert block == name and [index for index, *_ in layout] == [0, 1, 2]
        assert all(results[i].pixels is None for i in (0, 1, 2)) and results[3].pixels is not None
        blocks.unpack(name, results, layout)
        assert list(blocks.free) == [name]  # free for the next task
        for item, want in zip(results, expected):
            np.testing.assert_array_equal(np.asarray(item.pixels), want)
    finally:
        pe._STAGE = None
        for attached in pe._BLOCKS.values():
            attached.close()
        pe._BLOCKS.clear()
        blocks.close()
    assert pe._Blocks.for_run(2, 1 << 60) is None  # shared memory short: pixels through pipes, with a warning
