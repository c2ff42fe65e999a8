"""The served search page in a real headless Chromium (Debian's ``chromium``, driven by Playwright
with ``executable_path``; no browser download), over a real uvicorn server and Qdrant Edge.

Each test drives the page as a user does: type words, upload an image, click "more like this",
type a broken filter, go back and forward, open the full view and step through it by keyboard,
load more results and reload, click facet labels, meet every error status, open /docs with the
network cut off, and use a phone-sized window and dark mode. The screenshots in the README and
docs/serve.md come from here (``CLIP_INGEST_SCREENSHOTS=DIR`` writes them)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright import sync_api

from clip_ingest.connectors.backends import open_store

from browser_helpers import browser  # noqa: F401 (the fixture)
from imagegen import write_shape_folder
from serve_helpers import PLANTED_TEXT, FailingStore, plant_collection, running_server, serving_planted_duplicates

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_embedder):
    root = tmp_path_factory.mktemp("browser")
    folder = write_shape_folder(root / "photos", n=12)
    store = open_store("qdrant-edge", "shapes", path=str(root / "edge"))
    points, planted = plant_collection(store, tiny_embedder, folder)
    with running_server(store, tiny_embedder) as (url, _service):
        yield url, points, planted
    store.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str) -> None:
    out = os.environ.get("CLIP_INGEST_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"))


def card_ids(page) -> list[str]:
    return page.locator("#grid .hit").evaluate_all("cards => cards.map(c => c.dataset.id)")


def search_words(page, url: str, words: str, filter_text: str = "") -> None:
    page.goto(url + "/")
    page.fill("#q", words)
    if filter_text:
        page.fill("#filter", filter_text)
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .hit")


def wait_thumbnails(page) -> None:
    """Every card's thumbnail was fetched and decoded (a real image, not a broken one)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid .hit img')].every(i => i.complete && i.naturalWidth > 0)")


def test_typed_words_show_the_planted_answer_first_with_its_thumbnail(page, site):
    url, points, planted = site
    search_words(page, url, PLANTED_TEXT)
    ids = card_ids(page)
    assert ids[0] == planted.id and len(ids) == len(points) + 1  # k=24 > items: all of them
    wait_thumbnails(page)
    first = page.locator("#grid .hit").first
    assert first.locator(".rank").inner_text() == "1"
    assert float(first.locator(".score").inner_text()) == pytest.approx(1.0, abs=1e-3)
    assert "planted" in first.locator(".payload").inner_text()
    assert page.locator("#status").inner_text() == f"{len(ids)} result(s)"
    for box in ("#q", "#filter"):  # one line high, wide enough to type in
        size = page.locator(box).bounding_box()
        assert size["height"] < 60 and size["width"] > 150, (box, size)
    screenshot(page, "serve-text-search")


def test_an_uploaded_image_finds_itself(page, site):
    url, points, _ = site
    target = points[5]
    page.goto(url + "/")
    page.set_input_files("#file", target.payload["path"])
    page.wait_for_selector("#grid .hit")
    assert card_ids(page)[0] == target.id


def test_more_like_this_searches_by_that_result_and_updates_the_url(page, site):
    url, points, planted = site
    search_words(page, url, PLANTED_TEXT)
    second = card_ids(page)[1]
    page.locator("#grid .hit").nth(1).locator("button.more").click()
    page.wait_for_function("id => document.querySelector('#grid .hit') && "
                           "![...document.querySelectorAll('#grid .hit')].some(c => c.dataset.id === id)", arg=second)
    assert parse_qs(urlparse(page.url).query)["like"] == [second]
    assert second not in card_ids(page) and len(card_ids(page)) == len(points)  # all but itself
    wait_thumbnails(page)
    screenshot(page, "serve-more-like-this")


def test_an_invalid_filter_shows_the_position_and_keeps_the_previous_results(page, site):
    url, _, planted = site
    search_words(page, url, PLANTED_TEXT)
    before = card_ids(page)
    page.fill("#filter", 'colour = "red" and')
    error = page.locator("#filter-error")
    sync_api.expect(error).to_contain_text("position", timeout=TIMEOUT_MS)  # validated as you type
    assert "^" in error.inner_text()
    page.press("#q", "Enter")
    sync_api.expect(page.locator("#status")).to_contain_text("fix the filter")
    assert card_ids(page) == before
    screenshot(page, "serve-filter-error")
    page.fill("#filter", 'colour = "red"')
    sync_api.expect(error).to_have_text("")
    page.press("#q", "Enter")
    page.wait_for_function("n => document.querySelectorAll('#grid .hit').length < n", arg=len(before))
    payloads = page.locator("#grid .hit .payload").all_inner_texts()
    assert payloads and all("colour: red" in text for text in payloads)


def test_words_typed_before_the_page_has_its_model_info_are_kept(page, site):
    """The page asks /v1/info (is text calibrated?) before running the URL's search. Failure
    injection: that answer comes 1.5 s late (the browser's fetch delayed). What the user typed
    and searched meanwhile stays in the form and on the grid, never reset from the URL."""
    url, _, planted = site
    page.add_init_script("""(() => {
      const fetchNow = window.fetch;
      window.fetch = (path, options) => String(path).includes("/v1/info")
        ? new Promise((done) => setTimeout(done, 1500)).then(() => fetchNow(path, options))
        : fetchNow(path, options);
    })();""")
    search_words(page, url, PLANTED_TEXT)
    page.fill("#filter", 'colour = "red" and')
    page.wait_for_timeout(2500)  # the late /v1/info has come
    assert page.input_value("#q") == PLANTED_TEXT and page.input_value("#filter") == 'colour = "red" and'
    assert card_ids(page)[0] == planted.id
    sync_api.expect(page.locator("#filter-error")).to_contain_text("position")


def test_the_url_round_trips_the_query_and_back_restores_it(page, site):
    url, _, planted = site
    search_words(page, url, PLANTED_TEXT, filter_text='shape = "planted"')
    query = parse_qs(urlparse(page.url).query)
    assert query["text"] == [PLANTED_TEXT] and query["filter"] == ['shape = "planted"']
    assert card_ids(page) == [planted.id]
    shared = page.url
    # a shared link, opened fresh, fills the form and shows the same results
    other = page.context.new_page()
    other.goto(shared)
    other.wait_for_selector("#grid .hit")
    assert other.input_value("#q") == PLANTED_TEXT and other.input_value("#filter") == 'shape = "planted"'
    assert card_ids(other) == [planted.id]
    other.close()
    # a second search, then Back: the first query is restored
    page.fill("#filter", "")
    page.fill("#q", "a blue circle")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length > 1")
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 1")
    assert page.input_value("#q") == PLANTED_TEXT and card_ids(page) == [planted.id]


def test_keyboard_slash_focuses_the_search_box_and_a_phone_window_has_two_columns(browser, site):
    url, *_ = site
    context = browser.new_context(viewport={"width": 375, "height": 700})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    search_words(page, url, PLANTED_TEXT)
    page.locator("#grid .hit button.more").first.focus()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    boxes = [page.locator("#grid .hit").nth(i).bounding_box() for i in range(3)]
    assert boxes[1]["y"] == boxes[0]["y"] and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"]  # two side by side
    assert boxes[2]["x"] == boxes[0]["x"] and boxes[2]["y"] > boxes[0]["y"] + boxes[0]["height"]  # then the next row
    assert all(box["width"] > 140 for box in boxes)  # pictures big enough to see on a phone
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    wait_thumbnails(page)
    screenshot(page, "serve-phone")
    context.close()


@pytest.fixture(scope="module")
def dup_site(tmp_path_factory, starter_embedder):
    """The starter model (which calibrates) over planted near-duplicate groups, served."""
    with serving_planted_duplicates(starter_embedder, tmp_path_factory.mktemp("browser-dups"), range(60, 72), edited=4) as served:
        yield served


def group_ids(page) -> list[str]:
    return page.locator("#grid .group").evaluate_all("groups => groups.map(g => g.dataset.group)")


def test_duplicate_groups_are_reviewed_on_the_page_and_stay_reviewed(page, dup_site):
    import httpx

    url, service, _ = dup_site
    expected = httpx.get(url + "/v1/duplicates", timeout=120).json()["groups"]
    assert len(expected) >= 2
    page.goto(url + "/")
    page.click("#dups")
    page.wait_for_selector("#grid .group")
    assert group_ids(page) == [g["group"] for g in expected]
    assert parse_qs(urlparse(page.url).query) == {"duplicates": ["1"], "tier": ["duplicates"]}
    first = page.locator("#grid .group").first
    assert first.locator(".member").count() == expected[0]["size"]
    # thumbnails load as they come near the screen: those on the first screen are there
    page.wait_for_function("() => [...document.querySelectorAll('#grid .group img')].filter(i => i.getBoundingClientRect().top"
                           " < innerHeight).every(i => i.complete && i.naturalWidth > 0)")
    first.locator("button.not-duplicates").click()
    page.wait_for_function("n => document.querySelectorAll('#grid .group').length === n", arg=len(expected) - 1)
    assert page.locator("#status").inner_text().startswith("saved: not-duplicates")
    second = page.locator("#grid .group").first
    kept = second.locator(".member").nth(1).get_attribute("data-id")
    second.locator(".member").nth(1).locator("button.keep-one").click()
    page.wait_for_function("n => document.querySelectorAll('#grid .group').length === n", arg=len(expected) - 2)
    page.reload()  # the URL brings the view back, without the two resolved groups
    page.wait_for_function("() => /group\\(s\\)/.test(document.querySelector('#status').textContent)")
    assert group_ids(page) == [g["group"] for g in expected[2:]]
    reviews = {p.payload["duplicate_review"]["decision"]: p.payload["duplicate_review"]
               for p in service.store.scroll(fields=["duplicate_review"]) if "duplicate_review" in p.payload}
    assert set(reviews) == {"not-duplicates", "keep-one"} and reviews["keep-one"]["keep"] == kept


def test_the_relevance_slider_cuts_image_and_text_searches_at_the_calibrated_score(page, dup_site):
    import httpx

    url, service, truth = dup_site
    query = next(p for p in sorted(truth["60"]) if "-edit" not in p)
    expected = httpx.post(url + "/v1/search", json={"image": base64.b64encode(Path(query).read_bytes()).decode(),
                                                    "k": 24, "min_relevance": 0.5}, timeout=120).json()
    page.goto(url + "/")
    assert page.locator("#rel-out").inner_text() == "off"
    page.eval_on_selector("#rel", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')); }")
    assert page.locator("#rel-out").inner_text() == "0.50"
    page.set_input_files("#file", query)
    page.wait_for_function("() => /relevance >= 0.5/.test(document.querySelector('#status').textContent)")
    assert card_ids(page) == [h["id"] for h in expected["hits"]] and 0 < len(expected["hits"]) < 24
    assert f"cosine >= {expected['min_score']:.4f}" in page.locator("#status").inner_text()
    # the starter carries a text calibration: a text search is cut too, each query at its own cosine
    words = httpx.get(url + "/v1/search", params={"text": "a red picture", "k": 24, "min_relevance": 0.5}, timeout=120).json()
    page.fill("#q", "a red picture")
    page.press("#q", "Enter")
    page.wait_for_function("() => /cut per query/.test(document.querySelector('#status').textContent)")
    assert parse_qs(urlparse(page.url).query)["min_relevance"] == ["0.5"]
    assert card_ids(page) == [h["id"] for h in words["hits"]]


def test_every_error_status_shows_the_servers_message(page, site, tmp_path):
    url, *_ = site
    page.goto(url + "/?text=a+cup&k=5000")  # 422: a value out of range
    sync_api.expect(page.locator("#status")).to_contain_text("error 422: invalid request: k: ")
    page.goto(url + "/?like=00000000-0000-0000-0000-000000000000")  # 404: no such item
    sync_api.expect(page.locator("#status")).to_contain_text("error 404: no point with id")
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"these are notes, not a picture")
    page.set_input_files("#file", str(not_image))  # 400: the decoder's reason
    sync_api.expect(page.locator("#status")).to_contain_text("error 400: image: not_an_image")
    assert "undefined" not in page.locator("#status").inner_text()


def test_the_api_docs_render_without_internet(page, site):
    url, *_ = site
    outside: list[str] = []

    def local_only(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/v1/search", "/v1/embeddings", "/v1/duplicates"} <= {p.replace("\u200b", "") for p in paths}, paths
    assert not outside, outside
    assert page.evaluate("document.querySelector('link[rel~=icon]').href").endswith("/favicon.svg")


def test_the_lightbox_shows_the_full_image_the_payload_table_and_steps_with_the_keyboard(page, site):
    url, points, planted = site
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    search_words(page, url, PLANTED_TEXT)
    ids = card_ids(page)
    page.locator("#grid .hit .view").first.click()
    lightbox = page.locator("#lightbox")
    sync_api.expect(lightbox).to_be_visible()
    page.wait_for_function("() => $('lb-img').complete && $('lb-img').naturalWidth > 0")
    table = dict(zip(page.locator("#lb-payload th").all_inner_texts(), page.locator("#lb-payload td").all_inner_texts()))
    assert table == {"id": planted.id, **{key: str(value) for key, value in planted.payload.items()}}
    original = page.request.get(page.evaluate("$('lb-open').href"))
    assert original.ok and original.body() == open(planted.payload["path"], "rb").read()
    page.click("#lb-copy")
    assert page.evaluate("navigator.clipboard.readText()") == f"{url}/?like={planted.id}"
    screenshot(page, "serve-lightbox")
    page.keyboard.press("ArrowRight")
    sync_api.expect(page.locator("#lb-payload td").first).to_have_text(ids[1])
    page.keyboard.press("ArrowLeft")
    sync_api.expect(page.locator("#lb-payload td").first).to_have_text(ids[0])
    page.keyboard.press("Escape")
    sync_api.expect(lightbox).to_be_hidden()
    # the grid by keyboard: the focus comes back to the card, arrows move it, Enter opens that one
    assert page.evaluate("document.activeElement.closest('.hit').dataset.id") == ids[0]
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.closest('.hit').dataset.id") == ids[1]
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#lb-payload td").first).to_have_text(ids[1])
    page.click("#lb-more")  # more like this, from the full view
    page.wait_for_function("id => new URLSearchParams(location.search).get('like') === id", arg=ids[1])
    sync_api.expect(lightbox).to_be_hidden()


def test_load_more_pages_on_and_the_url_keeps_the_position(page, site):
    url, points, planted = site
    everything = len(points) + 1
    page.goto(url + "/?text=" + PLANTED_TEXT.replace(" ", "+") + "&k=5")
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 5")
    page.click("#load-more")
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 10")
    assert parse_qs(urlparse(page.url).query)["shown"] == ["10"]
    ranks = page.locator("#grid .hit .rank").all_inner_texts()
    assert ranks == [str(i) for i in range(1, 11)]
    first_ten = card_ids(page)
    page.reload()  # the position comes back: ten results, the same ones
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 10")
    assert card_ids(page) == first_ten
    page.click("#load-more")
    page.wait_for_function("n => document.querySelectorAll('#grid .hit').length === n", arg=everything)
    sync_api.expect(page.locator("#load-more")).to_be_hidden()  # the last page was short: nothing more
    assert len(set(card_ids(page))) == everything and card_ids(page)[0] == planted.id


def test_the_query_image_is_shown_and_the_url_never_keeps_older_words(page, site):
    url, points, _ = site
    search_words(page, url, PLANTED_TEXT)
    target = points[5]
    page.set_input_files("#file", target.payload["path"])
    page.wait_for_function("id => document.querySelector('#grid .hit').dataset.id === id", arg=target.id)
    sync_api.expect(page.locator("#query-view")).to_be_visible()
    page.wait_for_function("() => $('query-img').complete && $('query-img').naturalWidth > 0")
    assert page.input_value("#q") == "" and "text" not in parse_qs(urlparse(page.url).query)
    screenshot(page, "serve-image-query")
    # "more like this": the seed is shown and named in the URL, so a reload shows the same view
    seed = card_ids(page)[1]
    page.locator("#grid .hit").nth(1).locator("button.more").click()
    page.wait_for_function("id => new URLSearchParams(location.search).get('like') === id", arg=seed)
    page.reload()
    page.wait_for_selector("#grid .hit")
    page.wait_for_function("() => $('query-img').complete && $('query-img').naturalWidth > 0")
    assert "more like this" in page.locator("#query-label").inner_text() and seed not in card_ids(page)


def test_facets_filter_by_a_label_and_write_the_filter(page, site):
    url, points, planted = site
    search_words(page, url, PLANTED_TEXT)
    red = page.locator('#facets .chip[data-field="colour"][data-value="red"]')
    expected = sum(p.payload["colour"] == "red" for p in points) + 1
    assert red.locator("small").inner_text() == str(expected)
    red.click()
    assert page.input_value("#filter") == 'colour = "red"'
    page.wait_for_function("n => document.querySelectorAll('#grid .hit').length === n", arg=expected)
    assert all("colour: red" in text for text in page.locator("#grid .hit .payload").all_inner_texts())
    assert parse_qs(urlparse(page.url).query)["filter"] == ['colour = "red"'] and red.get_attribute("aria-pressed") == "true"
    page.locator('#facets .chip[data-field="shape"][data-value="planted"]').click()
    assert page.input_value("#filter") == 'colour = "red" and shape = "planted"'
    page.wait_for_function("() => document.querySelectorAll('#grid .hit').length === 1")
    screenshot(page, "serve-facets")
    red.click()  # a second click takes the label out again
    assert page.input_value("#filter") == 'shape = "planted"'
    page.fill("#filter", 'shape = "circle" or shape = "square"')
    red.click()  # joined to a filter with "or": parenthesised first, so it narrows every branch
    assert page.input_value("#filter") == '(shape = "circle" or shape = "square") and colour = "red"'
    page.wait_for_function("() => (new URLSearchParams(location.search).get('filter') || '').startsWith('(shape')")
    expected = sum(p.payload["colour"] == "red" and p.payload["shape"] in ("circle", "square") for p in points)
    page.wait_for_function("n => document.querySelectorAll('#grid .hit').length === n", arg=expected)
    texts = page.locator("#grid .hit .payload").all_inner_texts()
    assert all("colour: red" in t and ("shape: circle" in t or "shape: square" in t) for t in texts), texts
    page.fill("#filter", 'lable = "red"')  # a misspelt field: warned about on the page
    page.press("#q", "Enter")
    sync_api.expect(page.locator("#warnings")).to_contain_text("lable")


def test_dark_mode_follows_the_system_and_the_favicon_is_served(browser, site):
    url, *_ = site
    context = browser.new_context(viewport={"width": 1100, "height": 800}, color_scheme="dark")
    page = context.new_page()
    search_words(page, url, PLANTED_TEXT)
    wait_thumbnails(page)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in background[background.index("(") + 1:-1].split(",")[:3]) < 120, background
    icon = page.request.get(page.evaluate("document.querySelector('link[rel=icon]').href"))
    assert icon.ok and icon.headers["content-type"] == "image/svg+xml"
    screenshot(page, "serve-dark")
    context.close()


def test_a_wrong_key_an_oversized_upload_and_a_database_down_show_their_messages(page, tmp_path, tiny_embedder):
    """401, 413 and 503 on the page, from a server with an API key over a store that fails on demand."""
    real = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    plant_collection(real, tiny_embedder, write_shape_folder(tmp_path / "p", n=2))
    store = FailingStore(real)
    typed = ["wrong"]  # what the user types when the page asks for the API key
    page.on("dialog", lambda dialog: dialog.accept(typed[0]))
    with running_server(store, tiny_embedder, api_key="right-key", max_upload_bytes=1 << 20) as (url, _):
        page.goto(url + "/")
        page.fill("#q", PLANTED_TEXT)
        page.press("#q", "Enter")
        sync_api.expect(page.locator("#status")).to_contain_text("error 401: missing or wrong API key")
        typed[0] = "right-key"
        page.press("#q", "Enter")
        page.wait_for_selector("#grid .hit")
        page.locator("#grid .hit .view").first.click()
        with page.expect_popup() as opened:  # the original, fetched with the key
            page.click("#lb-open")
        original = opened.value
        original.wait_for_url(lambda address: address.startswith("blob:"))
        original.wait_for_function("() => document.images.length && document.images[0].naturalWidth > 0")
        original.close()
        page.keyboard.press("Escape")
        huge = tmp_path / "huge.png"
        huge.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (2 << 20))
        page.set_input_files("#file", str(huge))
        sync_api.expect(page.locator("#status")).to_contain_text("error 413: image over 1048576 bytes")
        store.down = True
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        sync_api.expect(page.locator("#status")).to_contain_text("error 503: database unavailable")
        store.down = False
    real.close()
    page.goto("about:blank")
