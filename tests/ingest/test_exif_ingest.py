"""Ingestion puts the photo fields in the payload, keeps them through metadata edits, and the date
and place filters select them in every embedded backend (Qdrant Edge, qdrant-client local mode,
Milvus Lite; the Milvus server runs the same expressions as Milvus Lite)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from clip_ingest.connectors.backends.qdrant.client_store import QdrantClientStore
from clip_ingest.connectors.ingest.exif import PHOTO_FIELDS
from clip_ingest.connectors.filters import UnsupportedFilterError, parse_filter
from exif_photos import write_trip
from ingest_helpers import COLLECTION, ingest, open_test_store, points_by_path

BACKENDS = ("qdrant-edge", "qdrant-local", "milvus")
INDEXES = {"taken_at": "float", "gps": "geo", "camera_make": "keyword"}

#: filter -> the photos it selects (docs/filters.md; times in exif_photos.TRIP)
EXPECTED = {
    # Lyon at 23:50 on 31 May, +02:00, is 21:50 UTC: before 1 June in UTC
    "taken_at >= 2019-06-01": {"paris_eiffel.jpg", "paris_louvre.jpg"},
    'taken_at_local startswith "2019-06"': {"paris_eiffel.jpg", "paris_louvre.jpg"},
    "taken_at >= 2019-05-31T23:00:00+02:00 and taken_at < 2019-06-01T14:30:00+02:00": {"lyon_night.jpg"},
    "taken_at < 1980-01-01": {"scan_1975.jpg"},
    "gps within box (45, 2) to (49, 5)": {"paris_eiffel.jpg", "paris_louvre.jpg", "lyon_night.jpg"},
    "gps within box (-20, 177) to (-12, -178)": {"fiji_beach.jpg"},
    'not exists gps and camera_make = "NIKON CORPORATION"': {"broken_clock.jpg"},
    'camera_make = "FUJIFILM" and taken_at < 2018-12-25': {"sydney_harbour.jpg"},
}
RADIUS = {"gps within 5 km of (48.8566, 2.3522)": {"paris_eiffel.jpg", "paris_louvre.jpg"}}


@pytest.fixture
def store(request, tmp_path):
    if request.param == "qdrant-local":
        with QdrantClientStore(COLLECTION, path=str(tmp_path / "local")) as local:
            yield local
        return
    with open_test_store(request.param, tmp_path / "db") as embedded:
        yield embedded


def names(store, text: str) -> set[str]:
    return {p.payload["path"].rsplit("/", 1)[1] for p in store.scroll() if p.id in ids(store, text)}


def ids(store, text: str) -> set[str]:
    """The points a filtered search returns (the count must agree)."""
    dim = store.collection_model()[1]
    hits = store.search(np.ones(dim, dtype=np.float32), k=50, filter=parse_filter(text))
    assert store.count(parse_filter(text)) == len(hits)
    return {hit.id for hit in hits}


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
def test_photo_fields_reach_the_payload_and_date_and_place_filters_select_them(store, tmp_path, tiny_embedder, caplog):
    folder = tmp_path / "trip"
    write_trip(folder)
    caplog.set_level(logging.WARNING)
    stats = ingest(store, tiny_embedder, folder, index_fields=INDEXES)
    assert (stats.new, stats.failed) == (8, 0)
    by_name = {path.rsplit("/", 1)[1]: payload for path, payload in points_by_path(store).items()}
    assert {k: by_name["paris_eiffel.jpg"][k] for k in PHOTO_FIELDS} == {
        "taken_at": 1559392200.0,
        "taken_at_local": "2019-06-01T14:30:00+02:00",
        "camera_make": "Canon",
        "camera_model": "Canon EOS 5D Mark IV",
        "lens": "EF24-70mm f/2.8L II USM",
        "gps": {"lat": 48.8584, "lon": 2.2945},
        "orientation": 1,
    }
    assert not set(PHOTO_FIELDS) & set(by_name["no_exif.jpg"])
    # the broken clock and the NaN latitude are dropped, with a warning, and the camera kept
    broken = by_name["broken_clock.jpg"]
    assert broken["camera_make"] == "NIKON CORPORATION" and "gps" not in broken and "taken_at" not in broken
    assert any("broken_clock.jpg: EXIF GPS position dropped" in r.getMessage() for r in caplog.records)

    for text, wanted in EXPECTED.items():
        assert names(store, text) == wanted, text
    for text, wanted in RADIUS.items():
        if store.__class__.__name__ == "MilvusStore":
            with pytest.raises(UnsupportedFilterError, match="within box"):
                names(store, text)
        else:
            assert names(store, text) == wanted, text


@pytest.mark.parametrize("store", ["qdrant-edge"], indirect=True)
def test_photo_fields_survive_metadata_edits_and_user_metadata_cannot_overwrite_them(store, tmp_path, tiny_embedder, caplog):
    folder = tmp_path / "trip"
    write_trip(folder)
    ingest(store, tiny_embedder, folder)
    (folder / "paris_eiffel.jpg.json").write_text(json.dumps({"album": "honeymoon", "gps": "home", "taken_at": 0}))
    caplog.set_level(logging.WARNING)
    again = ingest(store, tiny_embedder, folder)
    assert (again.metadata_updated, again.embedded) == (1, 0)
    payload = {p.rsplit("/", 1)[1]: v for p, v in points_by_path(store).items()}["paris_eiffel.jpg"]
    assert payload["album"] == "honeymoon"
    assert payload["gps"] == {"lat": 48.8584, "lon": 2.2945} and payload["taken_at"] == 1559392200.0
    assert any("'gps' is reserved" in r.getMessage() for r in caplog.records)
