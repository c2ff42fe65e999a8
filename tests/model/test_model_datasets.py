"""Each data set is read by one module for both the test benchmarks and the training manifests,
so the two see the same images, labels and (whitespace-normalised) captions."""

from __future__ import annotations

import csv

import numpy as np

from clip_ingest.model.benchmarks import BENCHMARKS, DEFAULT_BENCHMARKS
from clip_ingest.model.datasets.caltech import caltech101_rows, load_caltech101
from clip_ingest.model.datasets.flickr import flickr8k_rows, load_flickr8k
from model_evalgen import write_eval_data


def test_flickr_captions_are_normalised_the_same_for_evaluation_and_manifests(tmp_path):
    folder = tmp_path / "flickr8k"
    (folder / "images").mkdir(parents=True)
    with (folder / "captions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows([("b.jpg", "  a  dog\truns .  "), ("a.jpg", "a cat"), ("b.jpg", "   "), ("a.jpg", "two\n cats")])
    paths, captions, owner = load_flickr8k(tmp_path)
    assert [p.name for p in paths] == ["a.jpg", "b.jpg"]
    assert captions == ["a dog runs .", "a cat", "two cats"] and owner == [1, 0, 0]  # file order, blank one skipped
    rows = list(flickr8k_rows(folder))
    assert {r["path"].rsplit("/", 1)[1]: r["captions"] for r in rows} == {
        "a.jpg": ["a cat", "two cats"], "b.jpg": ["a dog runs ."]}


def test_caltech_split_lines_are_parsed_once_for_evaluation_and_manifests(tmp_path):
    base = tmp_path / "caltech101"
    base.mkdir()
    (base / "train.txt").write_text("ibis/image_0002.jpg\n\n  Faces_easy/image_0001.jpg  \nibis/image_0001.jpg\n")
    paths, labels = load_caltech101(tmp_path, "train")
    assert labels == ["Faces_easy", "ibis", "ibis"]
    assert [p.relative_to(base).as_posix() for p in paths] == [
        "Faces_easy/image_0001.jpg", "ibis/image_0002.jpg", "ibis/image_0001.jpg"]
    rows = list(caltech101_rows(tmp_path))
    assert sorted((r["path"], r["label"]) for r in rows) == sorted((str(p), label) for p, label in zip(paths, labels))
    assert rows[1]["captions"][0] == "a photo of a face."


def test_every_benchmark_is_built_with_its_data_and_scores_any_embedder(tmp_path, tiny_embedder):
    root = write_eval_data(tmp_path / "data")
    for name in DEFAULT_BENCHMARKS:
        benchmark = BENCHMARKS[name].load(root, None)
        assert benchmark.name == name
        per_query = benchmark(tiny_embedder)
        assert per_query and all(key.startswith(name) for key in per_query)
        assert all(isinstance(values, np.ndarray) and values.ndim == 1 and len(values) for values in per_query.values())
