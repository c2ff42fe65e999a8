"""Side-by-side benchmarks of clip-ingest (see benchmarks/README.md); each module runs with ``python -m``."""
