"""Searcher over real stores and the real tiny open_clip model, on generated coloured shapes."""

from __future__ import annotations

import html.parser
import shutil

import numpy as np
import pytest

from clip_ingest.connectors.backends import Hit, ModelMismatchError, StoreError, open_store
from clip_ingest.connectors.filters import FilterSyntaxError, parse_filter
from clip_ingest.connectors.search.html import render_html
from clip_ingest.connectors.search.searcher import PointNotFoundError, Searcher
from filter_reference import TARGETS, evaluate, store_options
from imagegen import make_shape_image, write_shape_folder
from search_helpers import plant_shapes


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("shapes") / "photos", n=12)


@pytest.fixture(scope="module", params=TARGETS)
def planted(request, tmp_path_factory, tiny_embedder, shapes_dir):
    """(searcher, points) with the 12 shapes stored in one real backend."""
    root = tmp_path_factory.mktemp(request.param)
    store = open_store(request.param, "shapes", **store_options(request.param, root))
    points = plant_shapes(store, tiny_embedder, shapes_dir)
    yield Searcher(store, tiny_embedder), points
    store.close()


def brute_force(points, vector, filter=None):
    """Ids of the points matching ``filter``, best cosine first (the expected database order)."""
    parsed = parse_filter(filter) if filter is not None else None
    kept = [p for p in points if parsed is None or evaluate(parsed, p.payload)]
    scores = [float(np.dot(p.vector, vector)) for p in kept]
    return [p.id for _, p in sorted(zip(scores, kept), key=lambda pair: -pair[0])]


def test_text_search_with_filter_returns_the_matching_items_in_score_order(planted, tiny_embedder):
    searcher, points = planted
    hits = searcher.search_text("a red circle", k=12, filter='colour = "red" or shape = "square"')
    query = tiny_embedder.embed_texts(["a red circle"])[0]
    assert all(isinstance(hit, Hit) for hit in hits)
    assert [hit.id for hit in hits] == brute_force(points, query, 'colour = "red" or shape = "square"')
    assert all(hit.payload["colour"] == "red" or hit.payload["shape"] == "square" for hit in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_text_search_pages_with_offset_and_threshold(planted):
    searcher, _ = planted
    everything = searcher.search_text("shape", k=12)
    assert len(everything) == 12
    page = searcher.search_text("shape", k=3, offset=3)
    assert [h.id for h in page] == [h.id for h in everything[3:6]]
    threshold = everything[4].score - 1e-6
    assert [h.id for h in searcher.search_text("shape", k=12, score_threshold=threshold)] == [h.id for h in everything[:5]]


def test_image_search_finds_the_image_itself_first(planted):
    searcher, points = planted
    target = next(p for p in points if p.payload["colour"] == "blue")
    hits = searcher.search_image(target.payload["path"], k=3, filter={"field": "colour", "op": "=", "value": "blue"})
    assert hits[0].id == target.id and hits[0].score > 0.99
    assert {h.payload["colour"] for h in hits} == {"blue"}


def test_similar_excludes_the_item_by_id_or_by_content(planted, tmp_path):
    searcher, points = planted
    target = points[0]
    by_id = searcher.search_similar(target.id, k=11)
    assert target.id not in {h.id for h in by_id} and len(by_id) == 11
    # the same bytes under another name are recognised by sha256 and excluded as well
    copy = tmp_path / "copy.png"
    shutil.copy(target.payload["path"], copy)
    by_path = searcher.search_similar(str(copy), k=11)
    assert [h.id for h in by_path] == [h.id for h in by_id]
    filtered = searcher.search_similar(target.id, k=12, filter='shape = "triangle"', offset=1)
    expected = [i for i in brute_force(points, target.vector, 'shape = "triangle"') if i != target.id]
    assert [h.id for h in filtered] == expected[1:]


def test_similar_to_a_new_image_embeds_it(planted, tmp_path):
    searcher, _ = planted
    new = tmp_path / "new.png"
    make_shape_image("green", "circle", variant=99).save(new)
    assert len(searcher.search_similar(str(new), k=4, filter='colour != "green"')) == 4


def test_batched_variants_match_single_queries(planted, shapes_dir):
    searcher, _ = planted
    texts = ["red", "a blue square"]
    assert [[h.id for h in hits] for hits in searcher.search_texts(texts, k=4)] == [
        [h.id for h in searcher.search_text(t, k=4)] for t in texts
    ]
    images = sorted(shapes_dir.rglob("*.png"))[:2]
    batch = searcher.search_images(images, k=2, filter="index >= 0")
    assert [[h.id for h in hits] for hits in batch] == [[h.id for h in searcher.search_image(i, k=2)] for i in images]


def test_errors_are_clear(planted, tiny_embedder):
    searcher, _ = planted
    with pytest.raises(FilterSyntaxError):
        searcher.search_text("x", filter="colour = ")
    with pytest.raises(PointNotFoundError):
        searcher.search_similar("00000000-0000-0000-0000-000000000000")
    with pytest.raises(PointNotFoundError, match="neither an existing image file nor a point id"):
        searcher.search_similar("photos/mistyped.jpg")
    with pytest.raises(ValueError):
        searcher.search_text("x", k=0)
    searcher.verify_model()


def test_verify_model_refuses_a_missing_collection_or_another_model(tmp_path, tiny_embedder):
    store = open_store("qdrant", "absent", path=str(tmp_path / "q"))
    with pytest.raises(StoreError, match="does not exist"):
        Searcher(store, tiny_embedder).verify_model()
    from clip_ingest.connectors.backends import CollectionSpec

    store.ensure_collection(CollectionSpec("absent", tiny_embedder.dim, "another-model"))
    with pytest.raises(ModelMismatchError, match="another-model"):
        Searcher(store, tiny_embedder).verify_model()
    store.close()


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.images: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-id" in attrs:
            self.ids.append(attrs["data-id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1


def test_html_page_references_every_hit_and_escapes_payloads(planted):
    searcher, _ = planted
    hits = searcher.search_text("circle", k=5)
    hostile = Hit("<script>alert(1)</script>", 0.5, {"path": "/nope/<b>.png", "label": "<script>x</script>"})
    page = render_html('query "<i>"', [*hits, hostile])
    parser = _Page()
    parser.feed(page)
    assert parser.ids == [h.id for h in hits] + [hostile.id]
    assert len(parser.images) == len(hits) and all(src.startswith("data:image/jpeg;base64,") for src in parser.images)
    assert parser.scripts == 0 and "&lt;script&gt;" in page
