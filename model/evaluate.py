"""The evaluation run: several models on the test benchmarks, one report.

``clip-model eval --model A --model B`` embeds every benchmark with the embedder ingestion uses
(:func:`clip_ingest.connectors.runtime.load_embedder`), so the numbers describe exactly the
vectors a collection will hold. The benchmarks are the classes of
:mod:`clip_ingest.model.benchmarks` (their data read once per run from one root:
``--data-root``, else ``$CLIP_INGEST_DATA``; layouts in :mod:`clip_ingest.model.datasets`);
the report (:mod:`clip_ingest.model.eval_report`) is rendered by :mod:`clip_ingest.model.tables`.
A missing dataset folder is reported (in the table and on stderr) and the other benchmarks
still run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.runtime import load_embedder

from .benchmarks import BENCHMARKS, DEFAULT_BENCHMARKS, Benchmark
from .datasets.common import DatasetMissingError
from .eval_report import EvalReport, ModelResult, PerQuery, means
from .vector_cache import SharedImageVectors


@dataclass(frozen=True)
class EvalOptions:
    """How to run the suite.

    ``max_per_class`` keeps at most that many images per ETH-80 object / Caltech
    class and split (and that many Flickr8k images), evenly spaced, for quick runs;
    ``None`` evaluates everything (the numbers to report).
    """

    data_root: Path
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    max_per_class: int | None = None
    device: str = "auto"
    batch_size: int = 64
    runtimes: tuple[str, ...] = ("torch",)
    """Each model is evaluated on each of these: ``torch``, ``onnx`` or ``onnx-int8`` (the
    quality cost of a faster runtime, measured on the same vectors a collection would hold)."""


#: ``--runtime`` values of ``clip-model eval`` -> (runtime, quantize) of :func:`load_embedder`
EVAL_RUNTIMES = {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}


def load_benchmarks(options: EvalOptions, missing: dict[str, str]) -> list[Benchmark]:
    """The selected benchmarks with their data; a missing dataset is recorded in ``missing``
    (and said on stderr) and left out."""
    loaded = []
    for name in options.benchmarks:
        try:
            loaded.append(BENCHMARKS[name].load(options.data_root, options.max_per_class))
        except DatasetMissingError as exc:
            missing[name] = str(exc)
            print(f"clip-model eval: skipping {name}: {exc}", file=sys.stderr)
    return loaded


def per_query_of(embedder: Embedder, benchmarks: Sequence[Benchmark]) -> PerQuery:
    """Per-query values of every benchmark for one embedder."""
    results: PerQuery = {}
    for benchmark in benchmarks:
        results.update(benchmark(embedder))
    return results


def _check(options: EvalOptions) -> None:
    unknown = sorted(set(options.benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    bad = sorted(set(options.runtimes) - set(EVAL_RUNTIMES))
    if bad:
        raise ValueError(f"unknown runtime(s) {bad}; choose from {sorted(EVAL_RUNTIMES)}")


def evaluate_models(specs: Sequence[str], options: EvalOptions) -> EvalReport:
    """Evaluate each model spec on each runtime in turn (one model in memory at a time); models
    with the same image tower share its image vectors (:class:`SharedImageVectors`)."""
    _check(options)
    missing: dict[str, str] = {}
    benchmarks = load_benchmarks(options, missing)
    models = []
    shared = SharedImageVectors()
    for spec in specs:
        for runtime in options.runtimes:
            engine, quantize = EVAL_RUNTIMES[runtime]
            embedder = load_embedder(spec, runtime=engine, quantize=quantize, device=options.device, batch_size=options.batch_size)
            per_query = per_query_of(shared.wrap(embedder), benchmarks)
            name = embedder.name if runtime == "torch" else f"{embedder.name} [{runtime}]"
            models.append(ModelResult(spec, name, embedder.model_id, means(per_query), per_query))
            del embedder
    settings = {
        "data_root": str(options.data_root),
        "benchmarks": list(options.benchmarks),
        "max_per_class": options.max_per_class,
    }
    return EvalReport(models, missing, settings)
