"""``clip-search serve``'s HTTP API over real embedded stores (Qdrant Edge, Milvus Lite), on a real
uvicorn server: every endpoint and its error cases (their one shape: test_serve_errors.py)."""

from __future__ import annotations

import base64
import io
import logging

import httpx
import numpy as np
import pytest
from PIL import Image

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.search.searcher import Searcher

from imagegen import image_bytes, write_shape_folder
from serve_helpers import (PLANTED_TEXT, FailingStore, plant_collection, running_server, served,  # noqa: F401 (fixture)
                           serving_planted_duplicates)


def test_text_search_finds_the_planted_answer_in_the_cli_json_schema(served, tiny_embedder):
    client, service, points, planted, _ = served
    response = client.get("/v1/search", params={"text": PLANTED_TEXT, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"filter", "query", "hits", "model_id"} and body["query"] == {"text": PLANTED_TEXT}
    assert body["model_id"] == tiny_embedder.model_id
    assert body["hits"][0]["id"] == planted.id and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    # the same answers as the in-process Searcher, in the same order
    expected = Searcher(service.store, tiny_embedder).search_text(PLANTED_TEXT, k=5)
    assert [h["id"] for h in body["hits"]] == [h.id for h in expected]


def test_filter_offset_and_min_score(served):
    client, *_ = served
    red = client.get("/v1/search", params={"text": PLANTED_TEXT, "filter": 'colour = "red"', "k": 10}).json()
    assert red["hits"] and all(h["payload"]["colour"] == "red" for h in red["hits"])
    page2 = client.get("/v1/search", params={"text": PLANTED_TEXT, "k": 2, "offset": 1}).json()
    full = client.get("/v1/search", params={"text": PLANTED_TEXT, "k": 3}).json()
    assert [h["id"] for h in page2["hits"]] == [h["id"] for h in full["hits"][1:3]] and page2["hits"][0]["rank"] == 2
    high = client.post("/v1/search", json={"text": PLANTED_TEXT, "min_score": 0.999, "k": 10}).json()
    assert len(high["hits"]) == 1


def test_uploaded_and_base64_images_find_themselves(served):
    client, _, points, _, _ = served
    target = points[4]
    content = open(target.payload["path"], "rb").read()
    upload = client.post("/v1/search/image", files={"file": ("q.png", content, "image/png")}, data={"k": "3"})
    assert upload.status_code == 200, upload.text
    assert upload.json()["hits"][0]["id"] == target.id
    posted = client.post("/v1/search", json={"image": base64.b64encode(content).decode(), "k": 3}).json()
    assert posted["hits"][0]["id"] == target.id and posted["query"] == {"image": f"<{len(content)} bytes>"}


def test_more_like_this_excludes_the_item_and_matches_in_process(served, tiny_embedder):
    client, service, points, _, _ = served
    target = points[0]
    body = client.get("/v1/search", params={"like": target.id, "k": 4}).json()
    ids = [h["id"] for h in body["hits"]]
    assert target.id not in ids and len(ids) == 4
    assert ids == [h.id for h in Searcher(service.store, tiny_embedder).search_similar(target.id, k=4)]


def test_items_and_thumbnails(served):
    client, _, points, _, _ = served
    target = points[2]
    item = client.get(f"/v1/items/{target.id}").json()
    assert item == {"id": target.id, "payload": target.payload}
    thumb = client.get(f"/v1/items/{target.id}/thumbnail", params={"size": 64})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) == 64
    assert client.get(f"/v1/items/{target.id}/thumbnail", params={"size": 63}).status_code == 400


def test_a_request_never_names_a_file(served, tmp_path):
    client, *_ = served
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    for path in (str(secret), "/etc/passwd", "../../etc/passwd"):
        assert client.get("/v1/search", params={"like": path}).status_code == 404
        assert client.get("/v1/items/x/thumbnail", params={"size": 64, "path": path}).status_code == 404
        assert client.get("/v1/items/x/file", params={"path": path}).status_code == 404


def test_error_cases(served):
    client, *_ = served
    bad = client.get("/v1/search", params={"text": "x", "filter": 'colour = "red" and'})
    assert bad.status_code == 400 and bad.json()["error"]["position"] == 18
    assert client.get("/v1/filter/validate", params={"filter": "colour = "}).json()["valid"] is False
    assert client.get("/v1/filter/validate", params={"filter": 'colour = "red"'}).json() == {
        "valid": True, "error": None, "position": None, "warnings": []}
    unknown = "00000000-0000-0000-0000-000000000000"
    assert client.get(f"/v1/items/{unknown}").status_code == 404
    assert client.get("/v1/search", params={"like": unknown}).status_code == 404
    notimage = client.post("/v1/search/image", files={"file": ("x.png", b"not an image at all", "image/png")})
    assert notimage.status_code == 400 and notimage.json()["error"]["code"] == "not_an_image"
    assert client.post("/v1/search", json={"image": "%%%"}).status_code == 400
    assert client.post("/v1/search", json={"text": "a", "like": unknown}).status_code == 400
    assert client.get("/v1/search", params={"text": "a", "k": 0}).status_code == 422


def test_bombs_and_oversized_uploads(tmp_path, tiny_embedder):
    store = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    plant_collection(store, tiny_embedder, write_shape_folder(tmp_path / "p", n=4))
    bomb_png = image_bytes(Image.new("L", (12000, 12000)))  # 144 MP of zeros: a few hundred KB
    with running_server(store, tiny_embedder, max_upload_bytes=1 << 20) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            bomb = client.post("/v1/search/image", files={"file": ("b.png", bomb_png, "image/png")})
            assert bomb.status_code == 400 and bomb.json()["error"]["code"] == "too_large"
            big = client.post("/v1/search/image", files={"file": ("b.png", b"\0" * (2 << 20), "image/png")})
            assert big.status_code == 413
    store.close()


def test_embeddings_and_the_unmodified_openai_client(served, tiny_embedder):
    import openai

    client, *_ = served
    texts = ["a red circle", "a blue square"]
    body = client.post("/v1/embed/text", json={"texts": texts}).json()
    expected = tiny_embedder.embed_texts(texts)
    assert body["model_id"] == tiny_embedder.model_id and np.allclose(body["vectors"], expected, atol=1e-5)
    sdk = openai.OpenAI(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused")
    result = sdk.embeddings.create(model=tiny_embedder.model_id, input=texts)  # the SDK asks for base64 by default
    assert result.model == tiny_embedder.model_id
    assert np.allclose([d.embedding for d in result.data], expected, atol=1e-5)
    floats = sdk.embeddings.create(model=tiny_embedder.model_id, input="a red circle", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, expected[0], atol=1e-5)
    assert client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}).status_code == 400
    image = client.post("/v1/embed/image", files=[("files", ("a.png", image_bytes(Image.new("RGB", (32, 32), (200, 10, 10))), "image/png"))]).json()
    assert len(image["vectors"]) == 1 and len(image["vectors"][0]) == tiny_embedder.dim


def test_langchains_openai_embeddings_class_works_against_the_server(served, tiny_embedder):
    """LangChain's ``OpenAIEmbeddings``, unmodified, pointed at the server. Its token-length check
    needs tiktoken's downloaded encodings and an OpenAI model name, so it is switched off, as
    LangChain documents for OpenAI-compatible servers."""
    from langchain_openai import OpenAIEmbeddings

    client, *_ = served
    embeddings = OpenAIEmbeddings(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused",
                                  model=tiny_embedder.model_id, check_embedding_ctx_length=False)
    texts = ["a red circle", "a blue square", "a green triangle"]
    assert np.allclose(embeddings.embed_documents(texts), tiny_embedder.embed_texts(texts), atol=1e-5)
    assert np.allclose(embeddings.embed_query(PLANTED_TEXT), tiny_embedder.embed_texts([PLANTED_TEXT])[0], atol=1e-5)


def test_health_readiness_metrics_and_openapi(served):
    client, *_ = served
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.get("/v1/search", params={"text": "x"})
    metrics = client.get("/metrics").text
    assert 'clip_search_requests_total{endpoint="/v1/search",method="GET",status="200"}' in metrics
    assert "clip_search_embed_batch_size_count" in metrics and "clip_search_request_seconds_bucket" in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/search/image", "/v1/embeddings", "/v1/items/{item_id}/thumbnail"} <= set(paths)
    page = client.get("/")
    # self-contained: no CDN, no external address of any kind
    assert page.status_code == 200 and "<script>" in page.text and "http://" not in page.text and "https://" not in page.text


def test_api_key_is_required_and_never_logged(tmp_path, tiny_embedder, caplog):
    store = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    plant_collection(store, tiny_embedder, write_shape_folder(tmp_path / "p", n=4))
    key = "s3cret-key-value"
    caplog.set_level(logging.DEBUG)
    with running_server(store, tiny_embedder, api_key=key) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            refused = client.get("/v1/search", params={"text": "x"})
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
            assert client.get("/v1/search", params={"text": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/v1/search", params={"text": "x"}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert client.get("/v1/info", headers={"X-API-Key": key}).json()["count"] == 5
            assert client.get("/healthz").status_code == 200
    assert key not in caplog.text
    store.close()


def test_database_down_gives_503_with_retry_after_and_recovers(tmp_path, tiny_embedder):
    real = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    _, planted = plant_collection(real, tiny_embedder, write_shape_folder(tmp_path / "p", n=4))
    store = FailingStore(real)
    with running_server(store, tiny_embedder) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            store.down = True
            down = client.get("/v1/search", params={"text": PLANTED_TEXT})
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert down.json()["error"]["code"] == "database_unavailable" and "injected" in down.json()["error"]["message"]
            assert client.get("/readyz").status_code == 503
            store.down = False
            assert client.get("/v1/search", params={"text": PLANTED_TEXT}).json()["hits"][0]["id"] == planted.id
            assert client.get("/readyz").status_code == 200
    real.close()


def test_the_serve_command_serves_the_collection_and_stops_cleanly(tmp_path, tiny_embedder):
    import signal
    import subprocess
    import sys

    from serve_helpers import free_port, serve_process

    store = open_store("qdrant-edge", "shapes", path=str(tmp_path / "data" / "qdrant-edge"))
    _, planted = plant_collection(store, tiny_embedder, write_shape_folder(tmp_path / "p", n=4))
    store.close()
    port = free_port()
    command = [sys.executable, "-m", "clip_ingest.connectors.cli.search", "serve", "--target", "qdrant-edge",
               "--collection", "shapes", "--data-dir", str(tmp_path / "data"), "--model", "clip-ingest-tiny:random", "--port", str(port)]
    missing = subprocess.run(command[:7] + ["nothing-here"] + command[8:], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    with serve_process(command, port) as server:
        hits = httpx.get(f"http://127.0.0.1:{port}/v1/search", params={"text": PLANTED_TEXT}, timeout=30).json()["hits"]
        assert hits[0]["id"] == planted.id
    output = server.output
    # a clean shutdown; recent uvicorn then re-raises the signal it caught (exit by SIGTERM)
    assert server.returncode in (0, -signal.SIGTERM) and "shutdown complete" in output, output


@pytest.fixture(scope="module")
def served_duplicates(tmp_path_factory, starter_embedder):
    with serving_planted_duplicates(starter_embedder, tmp_path_factory.mktemp("serve-duplicates"), range(40, 56), edited=4) as (url, service, truth):
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client, service, truth


def test_duplicates_are_the_finders_groups_at_the_calibrated_cut_and_reviews_stick(served_duplicates):
    from clip_ingest.connectors.calibration import cosine_for, load_calibration
    from clip_ingest.connectors.search.duplicates import CANDIDATE_MIN_RELEVANCE, DEFAULT_MIN_RELEVANCE, SamePhotoCheck, find_groups

    client, service, truth = served_duplicates
    response = client.get("/v1/duplicates")  # the default tier: edits of one photo
    assert response.status_code == 200, response.text
    body = response.json()
    calibration = load_calibration(service.model_id)  # measured by that request, and cached
    assert calibration is not None and body["threshold"] == pytest.approx(cosine_for(calibration, CANDIDATE_MIN_RELEVANCE))
    assert body["tier"] == "duplicates" and body["min_relevance"] == CANDIDATE_MIN_RELEVANCE
    assert body["groups"] == [g.to_dict() for g in find_groups(service.store, body["threshold"], same_photo=SamePhotoCheck())]
    planted_pairs = {frozenset((a, b)) for g in truth.values() for a in g for b in g if a < b}
    found_pairs = {frozenset((a["path"], b["path"])) for g in body["groups"] for a in g["members"] for b in g["members"] if a["path"] < b["path"]}
    assert found_pairs and found_pairs <= planted_pairs  # the pixel check claims no pair that was not planted
    similar = client.get("/v1/duplicates", params={"tier": "similar"}).json()
    assert similar["threshold"] == pytest.approx(cosine_for(calibration, DEFAULT_MIN_RELEVANCE))
    assert similar["groups"] == [g.to_dict() for g in find_groups(service.store, similar["threshold"])]

    first = body["groups"][0]
    ids = [m["id"] for m in first["members"]]
    saved = client.post("/v1/duplicates/review", json={"members": ids, "decision": "keep-one", "keep": ids[0]})
    assert saved.status_code == 200, saved.text
    assert saved.json()["decision"] == "keep-one" and saved.json()["members"] == sorted(ids)
    again = client.get("/v1/duplicates").json()
    assert first["group"] not in {g["group"] for g in again["groups"]} and len(again["groups"]) == len(body["groups"]) - 1
    resolved = client.get("/v1/duplicates", params={"include_resolved": True}).json()
    assert {g["group"]: g["review"]["keep"] for g in resolved["groups"] if g["review"]} == {first["group"]: ids[0]}


def test_review_and_duplicates_refuse_bad_input_with_clear_errors(served_duplicates):
    import uuid

    client, service, _ = served_duplicates
    ids = [p.id for p in service.store.scroll(fields=["duplicate_review"]) if "duplicate_review" not in p.payload][:2]
    cases = [
        ({"members": ids, "decision": "delete"}, 422),  # not a decision
        ({"members": ids[:1], "decision": "keep-all"}, 422),  # one member is no group
        ({"members": ids, "decision": "keep-one"}, 400),  # which one?
        ({"members": ids, "decision": "keep-all", "keep": ids[0]}, 400),
        ({"members": [ids[0], str(uuid.uuid4())], "decision": "keep-all"}, 404),  # the group changed
        ({"members": [ids[0], "../../etc/passwd"], "decision": "keep-all"}, 404),
    ]
    for body, status in cases:
        response = client.post("/v1/duplicates/review", json=body)
        assert response.status_code == status, (body, response.text)
    assert all("duplicate_review" not in p.payload for p in service.store.retrieve(ids))  # nothing was written
    assert client.get("/v1/duplicates", params={"min_relevance": 1.0}).status_code == 422


def test_min_relevance_on_image_and_like_searches_is_the_calibrated_min_score(served_duplicates):
    from clip_ingest.connectors.calibration import cosine_for, load_calibration

    client, service, truth = served_duplicates
    client.get("/v1/duplicates")  # calibrated by now
    cut = cosine_for(load_calibration(service.model_id), 0.5)
    query = next(p for p in sorted(truth["40"]) if "-edit" not in p)
    with open(query, "rb") as fh:
        image = base64.b64encode(fh.read()).decode()
    like = next(p.id for p in service.store.scroll(fields=["path"]) if p.payload["path"] == query)
    kept = {}
    for request in ({"image": image}, {"like": like}):
        relevant = kept[next(iter(request))] = client.post("/v1/search", json={**request, "k": 50, "min_relevance": 0.5}).json()
        raw = client.post("/v1/search", json={**request, "k": 50, "min_score": cut}).json()
        assert relevant["min_score"] == pytest.approx(cut) and relevant["min_relevance"] == 0.5
        assert [h["id"] for h in relevant["hits"]] == [h["id"] for h in raw["hits"]]
        everything = client.post("/v1/search", json={**request, "k": 50}).json()["hits"]
        assert 0 < len(relevant["hits"]) < len(everything)  # the cut keeps some and drops the rest
    uploaded = client.post("/v1/search/image", files={"file": ("q.png", base64.b64decode(image))}, data={"min_relevance": "0.5", "k": "50"})
    assert uploaded.status_code == 200, uploaded.text
    assert [h["id"] for h in uploaded.json()["hits"]] == [h["id"] for h in kept["image"]["hits"]]
    for bad, status in (({"like": like, "min_relevance": 0.5, "min_score": 0.2}, 400), ({"like": like, "min_relevance": 1.5}, 422)):
        response = client.post("/v1/search", json=bad)
        assert response.status_code == status, (bad, response.text)


def test_text_min_relevance_needs_a_text_calibrated_model(served, served_duplicates):
    """The starter ships a text calibration (each text query is cut at its own calibrated cosine);
    the random tiny model has none, so a text query with min_relevance is refused with 400."""
    from clip_ingest.connectors.calibration import load_text_calibration, reference_vectors

    tiny_client, *_ = served
    assert tiny_client.get("/v1/info").json()["text_calibrated"] is False
    refused = tiny_client.get("/v1/search", params={"text": "a photo", "min_relevance": 0.5})
    assert refused.status_code == 400 and "calibrate-text" in refused.json()["error"]["message"]
    client, service, _ = served_duplicates
    assert client.get("/v1/info").json()["text_calibrated"] is True
    response = client.get("/v1/search", params={"text": "a red picture", "min_relevance": 0.5, "k": 100})
    assert response.status_code == 200, response.text
    kept = response.json()["hits"]
    everything = client.get("/v1/search", params={"text": "a red picture", "k": 100}).json()["hits"]
    cut = load_text_calibration(service.embedder).cut(service.embedder.embed_texts(["a red picture"])[0],
                                                      reference_vectors(service.store), 0.5)
    assert [h["id"] for h in kept] == [h["id"] for h in everything if h["score"] >= cut]
