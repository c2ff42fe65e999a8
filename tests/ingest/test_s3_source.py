"""Object-store sources: ``clip-ingest s3://bucket/prefix`` against a real S3-compatible server on
loopback (moto in server mode, spoken to over HTTP by pyarrow's S3 client and by boto3 as a user
would upload), with both executors. The collection must hold what a local folder of the same
images gives (same vectors, sidecar metadata, dead letters), with ``path`` = the object's URI;
re-runs are incremental by size + LastModified; overwrite / delete / add + ``--prune`` work."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.cli.ingest import main as ingest_main
from clip_ingest.connectors.ingest.ids import point_id

from badfiles import write_bad_corpus
from conftest import TINY_SPEC
from imagegen import make_shape_image, write_shape_folder

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

#: payload fields that name where a file lives (differ between a folder and a bucket) or when it was
#: written (``meta_sig`` holds the sidecar's mtime)
LOCATION = {"path", "paths", "mtime", "mtimes_ns", "ingested_at", "meta_sig"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback and the AWS SDK environment pointing at it (what a user of
    MinIO or Ceph sets); the environment is set before Ray starts so its workers inherit it."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env["AWS_ENDPOINT_URL"]
    server.terminate()
    server.wait(10)


def _upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _ingest(source: str, data: Path, collection: str, summary: Path, *extra: str, code: tuple[int, ...] = (0, 3)) -> dict:
    result = CliRunner().invoke(ingest_main, [source, "--target", "qdrant-edge", "--data-dir", str(data),
                                              "--collection", collection, "--model", TINY_SPEC, "--batch-size", "4",
                                              "--summary", str(summary), "-q", *extra])
    assert result.exit_code in code, result.output
    return json.loads(summary.read_text())


def _points(data: Path, collection: str) -> dict[str, dict]:
    """sha256 -> payload + vector, every id checked to be content-addressed."""
    with open_store("qdrant-edge", collection, path=str(data / "qdrant-edge")) as store:
        points = store.retrieve([p.id for p in store.scroll(fields=[])], with_vectors=True)
    out = {}
    for p in points:
        assert p.id == point_id(collection, p.payload["sha256"])
        out[p.payload["sha256"]] = {**p.payload, "vector": np.asarray(p.vector, dtype=np.float32)}
    return out


def _same_content(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for sha, point in a.items():
        other = b[sha]
        assert {k: v for k, v in point.items() if k not in LOCATION | {"vector"}} == \
               {k: v for k, v in other.items() if k not in LOCATION | {"vector"}}
        assert np.allclose(point["vector"], other["vector"], atol=1e-6)


@pytest.fixture
def bucket(s3_endpoint, tmp_path):
    """A bucket holding ``photos/``: 8 shape images with sidecar objects and a bad corpus; returns
    (boto3 client, bucket name, the local folder that was uploaded)."""
    s3 = boto3.client("s3")
    name = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    folder = write_shape_folder(tmp_path / "photos", n=8)
    write_bad_corpus(folder / "bad")
    (folder / "bad" / "folder.jpg").rmdir()  # an object store has no folders named like images
    _upload(s3, name, folder, "photos")
    s3.put_object(Bucket=name, Key="photos/.cache/hidden.png", Body=(folder / "circle").iterdir().__next__().read_bytes())
    return s3, name, folder


def test_an_s3_prefix_ingests_like_the_folder_it_was_uploaded_from_and_stays_incremental(bucket, tmp_path):
    s3, name, folder = bucket
    source = f"s3://{name}/photos"
    first = _ingest(source, tmp_path / "s3", "imgs", tmp_path / "1.json")
    local = _ingest(str(folder), tmp_path / "local", "imgs", tmp_path / "local.json")
    assert (first["new"], first["embedded"], first["failed"]) == (8, 8, 4) == (local["new"], local["embedded"], local["failed"])
    dead = [json.loads(line) for line in Path(first["dead_letter"]).read_text().splitlines()]
    assert sorted((r["path"], r["reason"]) for r in dead) == sorted(
        (f"{source}/bad/{n}", reason) for n, reason in [("empty.jpg", "empty"), ("page.jpg", "not_an_image"),
                                                        ("text.jpg", "not_an_image"), ("truncated.jpg", "truncated")])
    points = _points(tmp_path / "s3", "imgs")
    _same_content(points, _points(tmp_path / "local", "imgs"))  # same vectors, sidecar metadata, sizes
    assert sorted(p["path"] for p in points.values()) == sorted(
        f"{source}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.png"))  # hidden .cache skipped

    again = _ingest(source, tmp_path / "s3", "imgs", tmp_path / "2.json")
    assert (again["embedded"], again["new"], again["unchanged"]) == (0, 0, 8)  # zero model calls

    keys = sorted(k["Key"] for k in s3.list_objects_v2(Bucket=name, Prefix="photos/square/")["Contents"] if k["Key"].endswith(".png"))
    replaced = tmp_path / "replaced.png"
    make_shape_image("blue", "star", size=80, variant=9).save(replaced)  # another size: detectable in the same second
    s3.upload_file(str(replaced), name, keys[0])
    s3.delete_object(Bucket=name, Key=keys[1])
    make_shape_image("green", "circle", size=72, variant=3).save(replaced)
    s3.upload_file(str(replaced), name, "photos/new/added.png")
    after = _ingest(source, tmp_path / "s3", "imgs", tmp_path / "3.json", "--prune")
    assert (after["updated"], after["new"], after["pruned"], after["unchanged"], after["embedded"]) == (1, 1, 1, 6, 2)
    paths = sorted(path for p in _points(tmp_path / "s3", "imgs").values() for path in p["paths"])
    assert len(paths) == 8 == len(set(paths)) and f"s3://{name}/{keys[1]}" not in paths


def test_a_collection_from_a_bucket_is_calibrated_from_its_objects_like_its_folder(bucket, tmp_path, monkeypatch):
    """``--min-relevance`` on an ``s3://`` collection: the calibration reads the picked images
    through the object store and fits exactly what the same images in a local folder give."""
    from clip_ingest.connectors.calibration import collection_calibration, load_calibration
    from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

    _, name, folder = bucket
    embedder = OpenClipEmbedder("starter", device="cpu")
    fitted = {}
    for where, source in (("s3", f"s3://{name}/photos"), ("local", str(folder))):
        _ingest(source, tmp_path / where, "imgs", tmp_path / f"{where}.json", "--model", "starter")
        monkeypatch.setenv("CLIP_INGEST_CACHE", str(tmp_path / f"cache-{where}"))
        with open_store("qdrant-edge", "imgs", path=str(tmp_path / where / "qdrant-edge")) as store:
            fitted[where] = collection_calibration(embedder, store)
        assert load_calibration(embedder.model_id) == fitted[where]  # measured once, cached
    assert fitted["s3"] == fitted["local"] and fitted["s3"].images == 8 and fitted["s3"].slope > 0


def test_the_ray_executor_reads_the_same_bucket_into_the_same_collection(bucket, tmp_path):
    ray = pytest.importorskip("ray")
    _, name, _ = bucket
    source = f"s3://{name}/photos"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        by_ray = _ingest(source, tmp_path / "ray", "imgs", tmp_path / "ray.json", "--executor", "ray")
    finally:
        ray.shutdown()
    local = _ingest(source, tmp_path / "local", "imgs", tmp_path / "local.json")
    for key in ("new", "embedded", "failed", "unchanged"):
        assert by_ray[key] == local[key], key
    ray_points, local_points = _points(tmp_path / "ray", "imgs"), _points(tmp_path / "local", "imgs")
    _same_content(ray_points, local_points)
    assert {sha: p["paths"] for sha, p in ray_points.items()} == {sha: p["paths"] for sha, p in local_points.items()}


def test_bad_object_store_sources_get_clear_errors(s3_endpoint, tmp_path):
    runner = CliRunner()
    base = ["--target", "qdrant-edge", "--data-dir", str(tmp_path), "--model", TINY_SPEC]
    secret = runner.invoke(ingest_main, ["s3://bkt/photos?access_key=AKIA-SECRET", *base])
    assert secret.exit_code == 2 and "environment" in secret.output and "AKIA-SECRET" not in secret.output
    missing = runner.invoke(ingest_main, [f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/photos", *base])
    assert missing.exit_code in (1, 2) and "no-such-bucket" in missing.output
    assert not (tmp_path / "qdrant-edge").exists()  # refused before anything was opened or written
