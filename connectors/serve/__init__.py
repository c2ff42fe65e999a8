"""``clip-search serve``: a search page and a versioned HTTP API over one collection.

:mod:`.batching` shares forward passes between concurrent queries (texts; decoded images),
:mod:`.service` joins the store, the embedder and the batchers behind thread-safe calls,
:mod:`.app` assembles the HTTP app (FastAPI): the guard of :mod:`.guard` (API key, body size,
:mod:`.metrics`) and one router per area (:mod:`.search_api`, :mod:`.openai_embeddings`,
:mod:`.duplicates_api`, :mod:`.embed_api`, :mod:`.items_api`, :mod:`.operations_api`,
:mod:`.docs_pages`), each reading the app's :mod:`.state` through one dependency, every error
in the one shape of :mod:`.errors`; :mod:`.fields` samples the payload fields (filter warnings,
facets), and ``page.html`` is the self-contained search page served at ``/``.
"""
