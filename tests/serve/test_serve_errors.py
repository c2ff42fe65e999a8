"""Every error answer of ``clip-search serve``'s ``/v1`` API has OpenAI's shape, per route, with a
summarised message (never the rejected input echoed back); empty text is refused; a filter field
no item has is warned about; the facets are the collection's repeating labels."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import numpy as np
import pytest

from clip_ingest.connectors.backends import Point, open_store
from clip_ingest.connectors.backends.base import CollectionSpec
from clip_ingest.connectors.filters import parse_filter
from clip_ingest.connectors.serve.service import SearchService

from serve_helpers import PLANTED_TEXT, served  # noqa: F401 (fixture)

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code, error
    return error


def test_every_v1_route_answers_errors_in_the_openai_shape(served):
    client, service, points, _, _ = served
    cases = [
        (("GET", "/v1/search"), {"params": {"text": "x", "filter": 'colour = "red" and'}}, 400, "invalid_filter"),
        (("GET", "/v1/search"), {"params": {"text": "a", "k": 0}}, 422, "invalid_value"),
        (("GET", "/v1/search"), {"params": {"like": UNKNOWN_ID}}, 404, "not_found"),
        (("POST", "/v1/search"), {"json": {"text": "a", "like": UNKNOWN_ID}}, 400, "one_query"),
        (("POST", "/v1/search"), {"json": {"image": "%%%"}}, 400, "invalid_image"),
        (("POST", "/v1/search"), {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, None),
        (("POST", "/v1/search/image"), {"files": {"file": ("x.png", b"not an image", "image/png")}}, 400, "not_an_image"),
        (("POST", "/v1/search/image"), {}, 422, "invalid_value"),
        (("GET", "/v1/filter/validate"), {}, 422, "invalid_value"),
        (("GET", "/v1/duplicates"), {"params": {"limit": 0}}, 422, "invalid_value"),
        (("POST", "/v1/duplicates/review"), {"json": {"decision": "keep-all"}}, 400, None),
        (("POST", "/v1/embed/text"), {"json": {"texts": []}}, 422, "invalid_value"),
        (("POST", "/v1/embed/image"), {"files": [("files", ("a.png", b"nope", "image/png"))]}, 400, "not_an_image"),
        (("POST", "/v1/embeddings"), {"json": {"input": "a", "model": "text-embedding-3-small"}}, 404, "model_not_found"),
        (("POST", "/v1/embeddings"), {"json": {"input": [[1, 2, 3]]}}, 400, "unsupported_input"),
        (("POST", "/v1/embeddings"), {"json": {"input": []}}, 400, "empty_input"),
        (("GET", "/v1/models/not-this-one"), {}, 404, "model_not_found"),
        (("GET", f"/v1/items/{UNKNOWN_ID}"), {}, 404, "not_found"),
        (("GET", f"/v1/items/{UNKNOWN_ID}/file"), {}, 404, "not_found"),
        (("GET", f"/v1/items/{points[0].id}/thumbnail"), {"params": {"size": 63}}, 400, None),
        (("POST", "/v1/ingest"), {}, 404, "not_ingesting"),
        (("GET", "/v1/no-such-route"), {}, 404, "unknown_url"),
        (("DELETE", "/v1/search"), {}, 405, "method_not_allowed"),
    ]
    for (method, path), options, status, code in cases:
        assert_error_shape(client.request(method, path, **options), status, code)


def test_validation_errors_are_summarised_not_echoed(served):
    client, *_ = served
    texts = [f"text number {i} " * 5 for i in range(5000)]
    response = client.post("/v1/embed/text", json={"texts": texts})
    error = assert_error_shape(response, 422, "invalid_value")
    assert error["param"] == "texts" and "256" in error["message"]
    assert len(response.content) < 600 and "text number" not in response.text
    many = client.get("/v1/search", params={"text": "a", "k": 5000, "offset": -1, "min_relevance": 7})
    error = assert_error_shape(many, 422)
    assert error["message"].startswith("invalid request: k: ") and "offset" in error["message"] and error["param"] == "k"


def test_empty_text_is_refused(served):
    client, *_ = served
    for response in (client.get("/v1/search", params={"text": ""}), client.post("/v1/search", json={"text": "   "})):
        assert assert_error_shape(response, 400, "empty_text")["param"] == "text"


def test_a_filter_field_no_item_has_is_warned_about(served):
    client, *_ = served
    typo = client.get("/v1/search", params={"text": PLANTED_TEXT, "filter": 'lable = "red" or colour = "red"'}).json()
    assert typo["hits"] and len(typo["warnings"]) == 1 and "lable" in typo["warnings"][0] and "colour" in typo["warnings"][0]
    assert "warnings" not in client.get("/v1/search", params={"text": PLANTED_TEXT, "filter": 'colour = "red"'}).json()
    checked = client.get("/v1/filter/validate", params={"filter": "lable = 1"}).json()
    assert checked["valid"] is True and "lable" in checked["warnings"][0]


def test_facets_are_the_repeating_text_labels_with_their_counts(served):
    client, _, points, planted, _ = served
    body = client.get("/v1/facets").json()
    stored = [p.payload for p in points] + [planted.payload]
    assert body["sampled"] == len(stored)
    assert set(body["facets"]) == {"colour", "shape"}  # not path, sha256 or the integer index
    colours = {f["value"]: f["count"] for f in body["facets"]["colour"]}
    assert colours == {c: sum(p["colour"] == c for p in stored) for c in {p["colour"] for p in stored}}
    counts = [f["count"] for f in body["facets"]["colour"]]
    assert counts == sorted(counts, reverse=True)
    assert all(f["filter"] == f'colour = "{f["value"]}"' for f in body["facets"]["colour"])


def test_camera_and_year_facets_select_what_they_count(tmp_path, tiny_embedder):
    """Photo metadata as ingestion writes it (``taken_at`` Unix seconds, ``camera_model`` text):
    each facet's filter, run by the store, selects exactly the items the facet counts."""
    store = open_store("qdrant-edge", "photos", path=str(tmp_path / "edge"))
    store.ensure_collection(CollectionSpec("photos", tiny_embedder.dim, tiny_embedder.model_id))
    taken = [datetime(2018, 12, 31, 23, 59, 59, tzinfo=timezone.utc), datetime(2019, 1, 1, tzinfo=timezone.utc),
             datetime(2019, 7, 14, 12, tzinfo=timezone.utc), datetime(2021, 3, 1, tzinfo=timezone.utc)]
    rng = np.random.default_rng(0)
    points = [Point(str(uuid.uuid4()), rng.normal(size=tiny_embedder.dim).astype("float32"),
                    {"path": f"/photos/{i}.jpg", "taken_at": moment.timestamp(), "taken_at_local": moment.isoformat(),
                     "camera_model": "X100V" if i % 2 else "iPhone 12"})
              for i, moment in enumerate(taken)]
    store.upsert(points)
    store.flush()
    service = SearchService(store, tiny_embedder, serialise_store=True, collection="photos")
    try:
        facets = service.fields().facets()
    finally:
        service.close()
    assert set(facets) == {"camera_model", "taken_at"}  # taken_at_local is per photo: no facet
    assert [(f["value"], f["count"]) for f in facets["taken_at"]] == [("2021", 1), ("2019", 2), ("2018", 1)]
    for facet in facets.values():
        for value in facet:
            assert store.count(parse_filter(value["filter"])) == value["count"], value
    store.close()


@pytest.mark.parametrize("path", ["/", "/docs", "/favicon.ico"])
def test_pages_are_outside_the_api_key_and_the_favicon_exists(served, path):
    client, *_ = served
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].split(";")[0] in ("text/html", "image/svg+xml")
