"""``clip-ingest migrate``: a collection moves to another model while queries through its name keep
working, never empty, never mixing models; rollback; cron runs during a migration lose nothing; a
killed migration resumes. Real stores: Qdrant Edge, qdrant-client local mode, Milvus Lite, the
Milvus server of CI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.backends.base import (
    InvalidSettingError,
    ModelMismatchError,
    StoreError,
    TransientStoreError,
)
from clip_ingest.connectors.backends.qdrant.client_store import QdrantClientStore
from clip_ingest.connectors.cli.clip_ingest import main as clip_ingest
from clip_ingest.connectors.ingest.migration import physical_name
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.search.searcher import Searcher
from milvus_server import milvus_uri
from reliability_helpers import KillPoint, Target, run_cli

from conftest import TINY_SPEC
from imagegen import make_shape_image, write_shape_folder

NEW_SPEC = "clip-ingest-small:random"  # another architecture: another model id and another dimension
QUERY = "a red circle"


@pytest.fixture(scope="module")
def models() -> dict[str, OpenClipEmbedder]:
    loaded = {spec: OpenClipEmbedder(spec, device="cpu", batch_size=8) for spec in (TINY_SPEC, NEW_SPEC)}
    return {**loaded, **{e.model_id: e for e in loaded.values()}}


#: the Milvus server case, run where one is (``-m milvus_server``)
MILVUS_SERVER = pytest.param("milvus-server", marks=pytest.mark.milvus_server)


def _where(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[list[str], str, dict[str, Any]]:
    """(CLI arguments, open_store target, options) of one backend, collection ``shapes``."""
    data = tmp_path / "data"
    if name == "qdrant-edge":
        return ["--target", "qdrant-edge", "--data-dir", str(data)], "qdrant-edge", {"path": str(data / "qdrant-edge")}
    uri = milvus_uri(request, name == "milvus-server", tmp_path / "milvus.db")
    return ["--target", "milvus", "--milvus-uri", uri, "--data-dir", str(data)], "milvus", {"uri": uri}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(clip_ingest, [*args, "-q"])


class QueryLoop(threading.Thread):
    """Text queries through the collection's name for as long as the test runs, each checked:
    k hits, and every score equal to the cosine of the query model's vectors (so never mixed)."""

    def __init__(self, store, models: dict[str, OpenClipEmbedder], paths: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.searcher = Searcher(store, models[TINY_SPEC], load_model=lambda spec: models[spec])
        self.models, self.paths = models, paths
        self.done = threading.Event()
        self.errors: list[str] = []
        self.answered: dict[str, int] = {}

    def run(self) -> None:
        while not self.done.is_set():
            try:
                hits = self.searcher.search_text(QUERY, k=5)
                embedder = self.searcher.embedder
                if len(hits) != 5:
                    self.errors.append(f"{len(hits)} hits")
                    continue
                images = embedder.embed_images([self.paths[h.payload["path"]] for h in hits])
                expected = images @ embedder.embed_texts([QUERY])[0]
                if not np.allclose([h.score for h in hits], expected, atol=2e-3):
                    self.errors.append(f"scores {[h.score for h in hits]} are not {embedder.model_id}'s {expected}")
                self.answered[embedder.model_id] = self.answered.get(embedder.model_id, 0) + 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self, after: str | None = None) -> None:
        """Stop, once ``after`` (a model id) has answered a few queries."""
        deadline = time.monotonic() + 30
        while after and self.answered.get(after, 0) < 3 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        self.done.set()
        self.join(30)


def _contents(store) -> dict[str, tuple]:
    return {p.payload["sha256"]: tuple(sorted(p.payload["paths"])) for p in store.scroll()}


@pytest.mark.parametrize("backend", ["qdrant-edge", "milvus-lite", MILVUS_SERVER])
def test_migration_switches_models_while_queries_keep_working(backend, tmp_path, request, models):
    photos = write_shape_folder(tmp_path / "photos", n=12)
    paths = {str(p): p for p in photos.rglob("*.png")}
    args, target, options = _where(backend, tmp_path, request)
    collection = "shapes" if backend != "milvus-server" else f"shapes_{tmp_path.name[-8:].replace('-', '_')}"
    where = [*args, "--collection", collection]
    assert _cli(str(photos), *where, "--model", TINY_SPEC).exit_code == 0
    old_id, new_id = models[TINY_SPEC].model_id, models[NEW_SPEC].model_id

    with open_store(target, collection, **options) as store:
        ids_before = {p.id for p in store.scroll()}
        loop = QueryLoop(store, models, paths)
        loop.start()
        try:
            result = _cli("migrate", str(photos), *where, "--model", NEW_SPEC)
        finally:
            loop.stop(after=new_id)
        assert result.exit_code == 0, result.output
        assert loop.errors == []
        assert loop.answered.get(old_id, 0) > 0 and loop.answered.get(new_id, 0) > 0  # both sides of the switch
        assert store.alias_target() == physical_name(collection, new_id)
        assert store.collection_model() == (new_id, models[NEW_SPEC].dim)
        migrated = _contents(store)
        assert {p.id for p in store.scroll()} == ids_before  # an id a client kept still names its image

        fresh = [*args, "--collection", collection + "_fresh"]
        assert _cli(str(photos), *fresh, "--model", NEW_SPEC).exit_code == 0
        with open_store(target, collection + "_fresh", **options) as other:
            assert migrated == _contents(other) and store.count() == other.count() == 12

        status = _cli("migrate", *where, "--status")
        versions = json.loads(status.output)["versions"]
        assert versions == {physical_name(collection, old_id): old_id, physical_name(collection, new_id): new_id}

        assert _cli("migrate", *where, "--drop", physical_name(collection, new_id)).exit_code == 1  # live: refused
        assert _cli("migrate", *where, "--rollback").exit_code == 0
        assert store.collection_model() == (old_id, models[TINY_SPEC].dim)
        with pytest.raises(ModelMismatchError):  # a query model that does not match what the name serves now
            Searcher(store, models[NEW_SPEC]).search_text(QUERY)  # no load_model: refused, never mixed
        hits = Searcher(store, models[TINY_SPEC]).search_text(QUERY, k=5)
        assert len(hits) == 5
        assert _cli("migrate", *where, "--drop", physical_name(collection, new_id)).exit_code == 0
        assert physical_name(collection, new_id) not in store.collections()


@pytest.mark.parametrize("backend", ["milvus-lite", MILVUS_SERVER])
def test_searches_wait_through_a_slow_adoption_and_a_missing_name_fails_at_once(backend, tmp_path, request, models,
                                                                              monkeypatch):
    """Milvus cannot rename and alias in one step: adopting a plain collection renames it, loads it
    (seconds for a large one) and only then creates the alias, so the name is missing between.
    Failure injection widens that gap to 3 s (a large collection's load): queries through the name
    wait and answer, none fails. A name missing with no version of it, or a database that cannot
    be reached, fails at once, unwaited."""
    from pymilvus import MilvusClient

    photos = write_shape_folder(tmp_path / "photos", n=12)
    paths = {str(p): p for p in photos.rglob("*.png")}
    uri = milvus_uri(request, backend == "milvus-server", tmp_path / "milvus.db")
    name = f"slow_{tmp_path.name[-8:].replace('-', '_')}"
    where = ["--target", "milvus", "--milvus-uri", uri, "--data-dir", str(tmp_path / "data"), "--collection", name]
    assert _cli(str(photos), *where, "--model", TINY_SPEC).exit_code == 0
    rename = MilvusClient.rename_collection

    def slow_rename(self, *args, **kwargs):
        rename(self, *args, **kwargs)
        time.sleep(3.0)

    monkeypatch.setattr(MilvusClient, "rename_collection", slow_rename)
    with open_store("milvus", name, uri=uri) as store:
        loop = QueryLoop(store, models, paths)
        loop.start()
        try:
            result = _cli("migrate", str(photos), *where, "--model", NEW_SPEC)
        finally:
            loop.stop(after=models[NEW_SPEC].model_id)
        assert result.exit_code == 0, result.output
        assert loop.errors == []
        assert loop.answered.get(models[TINY_SPEC].model_id, 0) > 0

    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with open_store("milvus", name + "_missing", uri=uri) as store, pytest.raises(StoreError):
        Searcher(store, models[TINY_SPEC]).search_text(QUERY)
    with open_store("milvus", name, uri=uri) as store:  # an unreachable database is not waited for either

        def unreachable(*args: Any, **kwargs: Any) -> None:
            raise TransientStoreError("connection refused (injected)")

        monkeypatch.setattr(store, "search", unreachable)
        with pytest.raises(TransientStoreError):
            Searcher(store, models[NEW_SPEC]).search_text(QUERY)
    assert sleeps == []


def test_recreate_through_an_alias_is_refused(tmp_path, request, models):
    photos = write_shape_folder(tmp_path / "photos", n=4)
    args, target, options = _where("qdrant-edge", tmp_path, request)
    assert _cli(str(photos), *args, "--model", TINY_SPEC).exit_code == 0
    assert _cli("migrate", str(photos), *args, "--model", NEW_SPEC).exit_code == 0
    result = _cli(str(photos), *args, "--model", NEW_SPEC, "--recreate")
    assert result.exit_code == 2 and "alias" in result.output
    with open_store(target, "images", **options) as store:
        assert store.count() == 4 and store.collection_model()[0] == models[NEW_SPEC].model_id


def test_qdrant_client_local_mode_aliases_adoption_and_search_following(tmp_path, models):
    photos = write_shape_folder(tmp_path / "photos", n=6)
    old, new = models[TINY_SPEC], models[NEW_SPEC]
    store = QdrantClientStore("shapes", path=str(tmp_path / "qdrant"))
    try:
        run_ingest(store, old, IngestOptions(collection="shapes", directories=[str(photos)], progress=False, model_spec=TINY_SPEC))
        searcher = Searcher(store, old, load_model=lambda spec: models[spec])
        before = searcher.search_text(QUERY, k=3)
        store.adopt(physical_name("shapes", old.model_id))  # Qdrant cannot rename: copied, vectors included
        assert store.alias_target() == physical_name("shapes", old.model_id) and "shapes" not in store.collections()
        assert [h.id for h in searcher.search_text(QUERY, k=3)] == [h.id for h in before]
        new_name = physical_name("shapes", new.model_id)
        with _sibling(store, new_name) as built:
            run_ingest(built, new, IngestOptions(collection=new_name, directories=[str(photos)], progress=False,
                                                 model_spec=NEW_SPEC))
        store.switch_alias("shapes", new_name)
        assert len(searcher.search_text(QUERY, k=3)) == 3 and searcher.embedder is new  # followed, model reloaded
        with pytest.raises(InvalidSettingError):
            store.ensure_collection(_spec(new), recreate=True)
        with pytest.raises(StoreError):
            store.drop_collection(new_name)  # the alias points to it
    finally:
        store.close()


def _sibling(store: QdrantClientStore, name: str) -> QdrantClientStore:
    """Another collection of the same local-mode folder, through the same client (local mode allows one)."""
    sibling = object.__new__(QdrantClientStore)
    sibling.__dict__.update(store.__dict__, collection=name, _dim=None)
    sibling.close = lambda: None  # the client belongs to ``store``
    return sibling


def _spec(embedder):
    from clip_ingest.connectors.backends.base import CollectionSpec

    return CollectionSpec("shapes", embedder.dim, embedder.model_id)


def test_cron_runs_during_a_migration_lose_nothing_and_a_killed_migration_resumes(tmp_path, models):
    photos = write_shape_folder(tmp_path / "photos", n=10)
    target = Target("qdrant", tmp_path / "data")
    assert run_cli([str(photos), *target.args], tmp_path).exit_code == 0
    killed = run_cli(["migrate", str(photos), *target.args, "--no-switch"], tmp_path, model=NEW_SPEC,
                     hook=KillPoint("embed", 1))
    assert killed.exit_code == -9  # SIGKILL in the middle of the new collection's build
    make_shape_image("green", "square", size=64, variant=99).save(photos / "added-meanwhile.png")
    assert run_cli([str(photos), *target.args], tmp_path).exit_code == 0  # the cron job, old model, through the name
    resumed = run_cli(["migrate", str(photos), *target.args], tmp_path, model=NEW_SPEC)
    assert resumed.exit_code == 0, resumed.output
    with open_store("qdrant", "images", path=str(tmp_path / "data" / "qdrant")) as store:
        assert store.collection_model()[0] == models[NEW_SPEC].model_id
        listed = {path for point in store.scroll() for path in point.payload["paths"]}
        assert listed == {str(p) for p in photos.rglob("*.png")}  # the file added meanwhile is there
    old = physical_name("images", models[TINY_SPEC].model_id)
    with open_store("qdrant", old, path=str(tmp_path / "data" / "qdrant")) as kept:
        kept_paths = {path for point in kept.scroll() for path in point.payload["paths"]}
        assert kept_paths == listed  # the old version, still complete for a rollback


def test_serve_follows_a_migration_and_loads_the_new_model(tmp_path, request, models):
    from clip_ingest.connectors.serve.service import SearchService

    photos = write_shape_folder(tmp_path / "photos", n=6)
    args, target, options = _where("qdrant-edge", tmp_path, request)
    assert _cli(str(photos), *args, "--model", TINY_SPEC).exit_code == 0
    with open_store(target, "images", **options) as store:
        service = SearchService(store, models[TINY_SPEC], serialise_store=True, collection="images",
                                load_model=lambda spec: models[spec])
        try:
            assert len(service.search("text", QUERY, k=3)) == 3
            migrated = _cli("migrate", str(photos), *args, "--model", NEW_SPEC)
            assert migrated.exit_code == 0, migrated.output
            hits = service.search("text", QUERY, k=3)
            assert len(hits) == 3 and service.model_id == models[NEW_SPEC].model_id
            assert service.embed_texts([QUERY]).shape == (1, models[NEW_SPEC].dim)  # the API's embeddings follow too
        finally:
            service.close()
