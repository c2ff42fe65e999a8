"""``clip-search serve``: a search page and a versioned HTTP API over one collection.

:mod:`.batching` shares forward passes between concurrent queries (texts; decoded images),
:mod:`.service` joins the store, the embedder and the batchers behind thread-safe calls,
:mod:`.app` maps them to HTTP (FastAPI) with the routes of :mod:`.search_api`,
:mod:`.openai_embeddings` and :mod:`.docs_pages`, every error in the one shape of
:mod:`.errors`; :mod:`.fields` samples the payload fields (filter warnings, facets), and
``page.html`` is the self-contained search page served at ``/``.
"""
