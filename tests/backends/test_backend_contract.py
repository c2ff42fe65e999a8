"""The :class:`VectorStore` contract on an embedded store of every backend in the
registry: a backend added to the registry is held to the contract without a line here.
(qdrant-client's local mode and a Milvus server run it in their own modules.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from backend_contract import VectorStoreContract
from clip_ingest.connectors.backends.base import VectorStore
from clip_ingest.connectors.backends.registry import ADDRESS_FLAGS, BACKENDS
from clip_ingest.connectors.ingest.lock import SERVER_ADVICE
from clip_ingest.connectors.sink import Sink

from conftest import ONE_PER_BACKEND, open_embedded


class TestEveryBackendContract(VectorStoreContract):
    @pytest.fixture(autouse=True, params=ONE_PER_BACKEND)
    def _target(self, request: pytest.FixtureRequest) -> None:
        self.target = request.param

    def make_store(self, tmp_path: Path, collection: str) -> VectorStore:
        return open_embedded(self.target, tmp_path / "data", collection)


def test_the_store_fixture_opens_each_backend_it_names(store: VectorStore) -> None:
    """The shared ``store`` fixture: one real store per backend, on collection ``images``: a database
    to search, and a sink the ingestion pipeline writes."""
    assert store.collection == "images" and store.collection_model() is None
    assert isinstance(store, VectorStore) and isinstance(store, Sink)


def test_every_server_backend_names_its_address_setting_for_the_messages_that_point_to_it():
    for entry in BACKENDS:
        assert entry.address in {setting.name for setting in entry.settings}, entry.name
    assert ADDRESS_FLAGS == ("--qdrant-url", "--milvus-uri")
    assert all(f"{flag} http://" in SERVER_ADVICE for flag in ADDRESS_FLAGS)
