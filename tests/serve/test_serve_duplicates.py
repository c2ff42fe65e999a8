"""``GET /v1/duplicates`` page by page and ``POST /v1/duplicates/review`` by group id, over a real
uvicorn server and Qdrant Edge holding planted near-duplicate clusters (synthetic vectors, real
image files), at a raw cosine ``threshold`` so that no calibration is involved."""

from __future__ import annotations

import uuid

import httpx
import pytest

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.search.duplicates import find_groups, group_id

from serve_helpers import running_server
from synthetic_duplicates import THRESHOLD, plant_clusters


class CountingSearches:
    """The real store, counting its k-NN searches (how many times the grouping pass ran)."""

    def __init__(self, store) -> None:
        self._store = store
        self.searches = 0

    def search(self, *args, **kwargs):
        self.searches += 1
        return self._store.search(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def served(tmp_path, tiny_embedder):
    store = open_store("qdrant-edge", "dups", path=str(tmp_path / "edge"))
    planted = plant_clusters(store, tiny_embedder, tmp_path / "photos", 240)
    counting = CountingSearches(store)
    with running_server(counting, tiny_embedder, collection="dups") as (url, service):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, counting, planted, service
    store.close()


def listing(client, **params) -> httpx.Response:
    return client.get("/v1/duplicates", params={"threshold": THRESHOLD, "tier": "similar", **params})


def every_page(client, limit: int, by_cursor: bool) -> list[dict]:
    groups: list[dict] = []
    cursor = None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {"offset": len(groups)})}
        body = listing(client, **params).json()
        groups += body["groups"]
        cursor = body["next_cursor"]
        if cursor is None:
            return groups
        if not by_cursor:
            cursor = None


def test_pages_walk_the_finders_groups_once_each_with_what_a_person_picks_by(served):
    client, store, planted, _ = served
    first = listing(client, limit=7)
    assert first.status_code == 200, first.text
    body = first.json()
    expected = [g.to_dict() for g in find_groups(store, THRESHOLD)]
    assert body["total_groups"] == len(planted.clusters) == len(expected) > 14
    assert body["total_members"] == sum(len(c) for c in planted.clusters)
    assert body["groups"] == expected[:7] and body["next_cursor"] and body["threshold"] == THRESHOLD
    assert body["min_relevance"] is None and body["k"] == 10 and body["limit"] == 7
    for limit, by_cursor in ((7, True), (7, False), (500, True)):
        assert every_page(client, limit, by_cursor) == expected
    # largest first, then the closest, then by id; each id is the hash of its sorted members
    sizes = [g["size"] for g in expected]
    assert sizes == sorted(sizes, reverse=True)
    assert {frozenset(m["id"] for m in g["members"]) for g in expected} == {frozenset(c) for c in planted.clusters}
    by_id = {p.id: p.payload for p in planted.points}
    for group in expected:
        assert group["group"] == group_id(m["id"] for m in group["members"])
        for member in group["members"]:
            wanted = by_id[member["id"]]
            assert {k: member[k] for k in ("path", "size", "width", "height", "format")} == \
                   {k: wanted[k] for k in ("path", "size", "width", "height", "format")}
    assert listing(client, limit=7, offset=len(expected)).json()["groups"] == []


def test_a_cursor_page_stays_right_when_groups_before_it_are_reviewed(served):
    """The page a person reviews from loses groups as they decide; the next page by cursor starts
    where the last one ended (an offset would now skip as many groups as were decided)."""
    client, _, _, _ = served
    before = listing(client, limit=20).json()["groups"]
    first = listing(client, limit=5).json()
    for group in first["groups"][:3]:
        saved = client.post("/v1/duplicates/review", json={"group": group["group"], "decision": "keep-all", "threshold": THRESHOLD, "tier": "similar"})
        assert saved.status_code == 200, saved.text
    following = listing(client, limit=5, cursor=first["next_cursor"]).json()
    assert [g["group"] for g in following["groups"]] == [g["group"] for g in before[5:10]]
    assert following["total_groups"] == first["total_groups"] - 3


def test_the_grouping_pass_runs_once_while_the_collection_is_unchanged(served, tiny_embedder):
    client, store, planted, _ = served
    listing(client, limit=5)
    once = store.searches
    assert once == len(planted.points)  # one k-NN search per point
    cursor = listing(client, limit=5).json()["next_cursor"]
    listing(client, limit=5, cursor=cursor)
    listing(client, limit=5, offset=10, include_resolved=True)
    assert store.searches == once  # paging did not search again
    # a review shows at once, without a new pass
    gone = listing(client, limit=1).json()["groups"][0]
    saved = client.post("/v1/duplicates/review", json={"group": gone["group"], "decision": "keep-all", "threshold": THRESHOLD, "tier": "similar"})
    assert saved.status_code == 200, saved.text
    after = listing(client, limit=500).json()
    assert gone["group"] not in {g["group"] for g in after["groups"]} and after["total_groups"] == len(planted.clusters) - 1
    assert store.searches == once
    # a new point is a changed collection: the pass runs again and the new copy joins its group
    source = next(p for p in planted.points if p.id == after["groups"][0]["members"][0]["id"])
    store.upsert([type(source)(str(uuid.uuid4()), source.vector, dict(source.payload))])
    store.flush()
    grown = listing(client, limit=500).json()
    assert store.searches == once + len(planted.points) + 1
    assert grown["total_members"] == after["total_members"] + 1


def test_a_review_names_its_group_by_id_and_a_stale_or_unknown_id_is_404(served):
    client, store, planted, _ = served
    groups = listing(client, limit=500).json()["groups"]
    first, second = groups[0], groups[1]
    keep = first["members"][1]["id"]
    saved = client.post("/v1/duplicates/review", json={"group": first["group"], "decision": "keep-one", "keep": keep,
                                                       "threshold": THRESHOLD, "tier": "similar"})
    assert saved.status_code == 200, saved.text
    assert saved.json()["members"] == sorted(m["id"] for m in first["members"]) and saved.json()["keep"] == keep
    resolved = {g["group"]: g["review"] for g in listing(client, limit=500, include_resolved=True).json()["groups"]}
    assert resolved[first["group"]]["keep"] == keep
    # a resolved group can be decided again by its id (include_resolved lists it)
    again = client.post("/v1/duplicates/review", json={"group": first["group"], "decision": "not-duplicates", "threshold": THRESHOLD, "tier": "similar"})
    assert again.status_code == 200, again.text

    untouched = [m["id"] for m in second["members"]]
    store.delete([untouched[0]])  # the group changed since it was listed
    cases = [
        ({"group": second["group"], "decision": "keep-all", "threshold": THRESHOLD, "tier": "similar"}, 404, "changed since it was listed"),
        ({"group": "0123456789abcdef", "decision": "keep-all", "threshold": THRESHOLD, "tier": "similar"}, 404, "no near-duplicate group"),
        ({"group": first["group"], "members": untouched, "decision": "keep-all"}, 400, "not both"),
        ({"decision": "keep-all"}, 400, "not both"),
        ({"group": first["group"], "decision": "keep-one", "keep": untouched[1], "threshold": THRESHOLD, "tier": "similar"}, 400, "not a member"),
        ({"group": first["group"], "decision": "keep-all", "threshold": THRESHOLD, "min_relevance": 0.9}, 400, "not both"),
    ]
    for body, status, words in cases:
        response = client.post("/v1/duplicates/review", json=body)
        assert response.status_code == status and words in response.json()["error"]["message"], (body, response.text)
    assert all("duplicate_review" not in p.payload for p in store.retrieve(untouched[1:]))  # nothing was written


def test_bad_paging_is_refused_with_a_clear_error(served):
    client, _, _, _ = served
    cursor = listing(client, limit=3).json()["next_cursor"]
    for params, status in (({"cursor": "nonsense"}, 400), ({"cursor": cursor, "offset": 3}, 400), ({"limit": 0}, 422),
                           ({"limit": 501}, 422), ({"offset": -1}, 422), ({"min_relevance": 0.9}, 400)):
        response = listing(client, **params)
        assert response.status_code == status, (params, response.text)
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


def test_a_warmed_listing_is_served_without_a_new_grouping_pass(served):
    """``clip-search serve`` makes the listing at start (``SearchService.warm_duplicates``): the
    first request then reuses its k-NN pass instead of running one."""
    client, counting, _, service = served
    service.warm_duplicates(threshold=THRESHOLD, tier="similar")
    warmed = counting.searches
    assert warmed > 0  # the pass ran, ahead of any request
    assert listing(client).status_code == 200
    assert counting.searches == warmed
    service.warm_duplicates(min_relevance=2.0)  # refused (out of range): logged, never raised
