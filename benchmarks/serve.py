"""Served search: text-query latency and throughput of ``clip-search serve`` over loopback, beside the in-process Searcher.

Run ``python -m benchmarks.serve`` (``--duration 30`` per load level for the full run). Two
identical Qdrant Edge collections of ``--points`` synthetic vectors are filled; one is served by
a real ``clip-search serve`` subprocess (uvicorn, FastAPI, micro-batching), the other is searched
in this process by :class:`Searcher` with the same model. Each round, interleaved: ``--queries``
sequential in-process text searches, then ``--duration`` seconds of closed-loop HTTP load at each
``--concurrency`` level (every client sends its next query when the last one returned; every
query is a different text). Targets: served p50 at concurrency 1 <= 1.3 x in-process p50;
queries/s at concurrency 8 >= 3 x concurrency 1 (shared forward passes). The load generator
runs on the same cores as the server, which counts against the served numbers.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Sequence

import httpx

from clip_ingest.connectors.backends.base import CollectionSpec
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.search.searcher import Searcher

from . import common
from .ingest import TINY
from .query import COLOURS, INDEXED, SHAPES, fill, synthetic_points

COLLECTION = "serve_bench"
READY_TIMEOUT_S = 300


def query_texts(seed: int) -> Iterator[str]:
    """An endless stream of distinct query texts (nothing can be answered from a cache)."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        yield f"a photo of a {rng.choice(COLOURS)} {rng.choice(SHAPES)} number {seed}-{i}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: str, model: str, port: int) -> subprocess.Popen:
    """``clip-search serve`` on the collection under ``data_dir``, once ``/readyz`` answers."""
    command = [sys.executable, "-m", "clip_ingest.connectors.cli.search", "serve", "--target", "qdrant-edge",
               "--collection", COLLECTION, "--data-dir", data_dir, "--model", model, "--port", str(port), "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start: {process.communicate()[1][-2000:]}")
        time.sleep(0.3)


def in_process(searcher: Searcher, texts: Any, queries: int, k: int) -> list[float]:
    """Latencies (s) of ``queries`` sequential ``search_text`` calls."""
    return [common.timed(lambda: searcher.search_text(next(texts), k=k))[0] for _ in range(queries)]


def load(url: str, concurrency: int, duration_s: float, k: int, seed: int) -> tuple[list[float], int, float]:
    """Closed-loop load: ``concurrency`` clients for ``duration_s``; (latencies, errors, elapsed s)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def client(index: int) -> None:
        texts = query_texts(seed * 1000 + index)
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop_at:
                start = common.clock()
                try:
                    ok = http.get("/v1/search", params={"text": next(texts), "k": k}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                seconds = common.clock() - start
                with lock:
                    if ok:
                        latencies.append(seconds)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    started = common.clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], common.clock() - started


def mean_batch(url: str) -> tuple[float, float]:
    """(sum, count) of the server's embed batch-size histogram."""
    text = httpx.get(url + "/metrics", timeout=10).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("clip_search_embed_batch_size_")}
    return values.get("clip_search_embed_batch_size_sum", 0.0), values.get("clip_search_embed_batch_size_count", 0.0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, help="collection size [default: 10000; smoke: 200]")
    parser.add_argument("--model", help=f"model spec [default: ViT-B-32:random; smoke: {TINY}]")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="clients per load level [default: 1 8]")
    parser.add_argument("--duration", type=float, help="seconds per load level and round [default: 30; smoke: 1]")
    parser.add_argument("--queries", type=int, help="in-process queries per round [default: 50; smoke: 5]")
    parser.add_argument("--rounds", type=int, help="interleaved rounds [default: 2; smoke: 1]")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    args.points = args.points or (200 if args.smoke else 10_000)
    args.model = args.model or (TINY if args.smoke else "ViT-B-32:random")
    args.duration = args.duration or (1.0 if args.smoke else 30.0)
    args.queries = args.queries or (5 if args.smoke else 50)
    args.rounds = args.rounds or (1 if args.smoke else 2)
    embedder = OpenClipEmbedder(args.model, device="cpu", batch_size=1)
    vectors, payloads, ids = synthetic_points(args.points, embedder.dim)
    spec = CollectionSpec(COLLECTION, embedder.dim, embedder.model_id, INDEXED)
    work = common.Workdir.create(args.workdir)
    served_dir, local_dir = work.path / "served", work.path / "in-process"
    samples: dict[str, list[float]] = {"in-process": []}
    elapsed: dict[str, float] = {}
    errors: dict[str, int] = {}
    batches: dict[str, tuple[float, float]] = {}
    try:
        served = common.open_target("qdrant-edge", served_dir, COLLECTION)
        fill(served, spec, vectors, payloads, ids)
        served.close()  # an embedded store opens in one process: the server's from here on
        local = common.open_target("qdrant-edge", local_dir, COLLECTION)
        fill(local, spec, vectors, payloads, ids)
        port = free_port()
        server = start_server(str(served_dir), args.model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            searcher = Searcher(local, embedder)
            warm = query_texts(-1)
            in_process(searcher, warm, 3, args.k)
            load(url, 1, min(args.duration, 2.0), args.k, seed=-1)  # warm the server too
            for round_ in range(args.rounds):
                samples["in-process"] += in_process(searcher, query_texts(round_), args.queries, args.k)
                for c in args.concurrency:
                    before = mean_batch(url)
                    latencies, failed, seconds = load(url, c, args.duration, args.k, seed=round_ * 100 + c)
                    after = mean_batch(url)
                    name = f"served c={c}"
                    samples.setdefault(name, []).extend(latencies)
                    elapsed[name] = elapsed.get(name, 0.0) + seconds
                    errors[name] = errors.get(name, 0) + failed
                    total = batches.get(name, (0.0, 0.0))
                    batches[name] = (total[0] + after[0] - before[0], total[1] + after[1] - before[1])
        finally:
            server.terminate()
            server.communicate(timeout=60)
            local.close()
    finally:
        work.close()
    rows = []
    for name, values in samples.items():
        pct = common.percentiles([v * 1000 for v in values])
        served_run = name in elapsed
        rows.append({
            "mode": name, "queries": len(values), "errors": errors.get(name, 0),
            "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"],
            "queries_per_s": len(values) / elapsed[name] if served_run else len(values) / sum(values),
            "mean_batch": batches[name][0] / batches[name][1] if served_run and batches[name][1] else 1.0,
        })
    by_mode = {r["mode"]: r for r in rows}
    ratios = []
    if "served c=1" in by_mode:
        ratios.append(common.Ratio("served c=1 p50 / in-process p50", by_mode["served c=1"]["p50_ms"] / by_mode["in-process"]["p50_ms"],
                                   1.3, at_most=True))
        top = max(args.concurrency)
        if top > 1:
            ratios.append(common.Ratio(f"queries/s c={top} / c=1",
                                       by_mode[f"served c={top}"]["queries_per_s"] / by_mode["served c=1"]["queries_per_s"], 3.0))
    config = {"points": args.points, "model": args.model, "dim": embedder.dim, "k": args.k, "concurrency": args.concurrency,
              "duration_s": args.duration, "rounds": args.rounds, "in_process_queries": args.queries, "target": "qdrant-edge"}
    notes = [f"{sum(errors.values())} failed request(s)"] if any(errors.values()) else []
    return common.report("served search", config, {"text-query latency (ms) and throughput": rows}, ratios, args.json, notes)


if __name__ == "__main__":
    main()
