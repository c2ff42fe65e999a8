"""Artifacts: what an ingestion writes to be loaded elsewhere, not a database to search.

An artifact is a :class:`~..sink.Sink` of the ingestion pipeline and the source of a later load
(``clip-ingest --from-parquet``); it is no :class:`~..backends.base.VectorStore` and not in the
backend registry. :mod:`..targets` lists its ``--target`` value beside the databases'.
"""
