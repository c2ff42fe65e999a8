"""``clip-search serve``: a search page and a versioned HTTP API over one collection.

:mod:`.batching` shares forward passes between concurrent text queries, :mod:`.service` joins
the store, the embedder and the batcher behind thread-safe calls, :mod:`.app` maps them to HTTP
(FastAPI), and ``page.html`` is the self-contained search page served at ``/``.
"""
