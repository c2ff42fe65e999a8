"""No model by accident: an architecture named without weights is refused everywhere, with the
pretrained tags to choose from; ``ARCH:random`` asks for the seeded random weights on purpose."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from click.testing import CliRunner

from clip_ingest.connectors.cli.clip_ingest import main as ingest_main
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.factory import ModelLoadError, WeightlessModelError, parse_model_spec
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder, compute_model_id
from clip_ingest.connectors.runtime import load_embedder
from conftest import TINY_SPEC

WEIGHTLESS = "clip-ingest-tiny"


def test_a_bare_architecture_is_refused_with_its_pretrained_tags_and_the_random_tag():
    with pytest.raises(WeightlessModelError) as caught:
        parse_model_spec("ViT-B-32")
    message = str(caught.value)
    for tag in open_clip.list_pretrained_tags_by_model("ViT-B-32"):
        assert tag in message
    assert "'ViT-B-32:random'" in message and "ViT-B-32:/path/to/weights.safetensors" in message
    assert isinstance(caught.value, ModelLoadError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("spec", [WEIGHTLESS, f"{WEIGHTLESS}:", "clip-ingest-small"])
def test_a_config_without_published_weights_says_so(spec):
    with pytest.raises(WeightlessModelError, match=r"knows no pretrained weights for clip-ingest-\w+; .* write 'clip-ingest-\w+:random'"):
        parse_model_spec(spec)


def test_the_random_tag_is_the_seeded_model_the_bare_name_used_to_be():
    parsed = parse_model_spec(TINY_SPEC)
    assert (parsed.kind, parsed.arch, parsed.source) == ("random", WEIGHTLESS, None)
    embedder = OpenClipEmbedder(TINY_SPEC, device="cpu")
    with torch.random.fork_rng(devices=[]):  # what the bare name built: seed 0, open_clip's initialisation
        torch.manual_seed(0)
        model, _, _ = open_clip.create_model_and_transforms(WEIGHTLESS)
    # the model id (collections, calibration and ONNX caches are keyed by it) is unchanged
    assert embedder.model_id == compute_model_id(WEIGHTLESS, model, embedder.loaded.preprocess_cfg)
    assert embedder.model_id.startswith(f"{WEIGHTLESS}@")


def test_the_python_api_follows_the_same_rule():
    with pytest.raises(WeightlessModelError, match=f"'{WEIGHTLESS}:random'"):
        OpenClipEmbedder(WEIGHTLESS, device="cpu")
    with pytest.raises(WeightlessModelError):
        load_embedder(WEIGHTLESS, runtime="onnx")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """An embedded collection ingested with the explicitly random tiny model: its CLI options."""
    from imagegen import write_shape_folder

    root = tmp_path_factory.mktemp("specs")
    folder = write_shape_folder(root / "photos", n=6)
    where = ["--target", "qdrant-edge", "--data-dir", str(root / "data"), "--collection", "shapes", "--device", "cpu"]
    result = CliRunner().invoke(ingest_main, [*where, "--model", TINY_SPEC, "-q", str(folder)])
    assert result.exit_code == 0, result.output
    return where, folder


def refused(result) -> None:
    assert result.exit_code == 2, result.output
    assert f"model '{WEIGHTLESS}' loads no weights" in result.output and f"'{WEIGHTLESS}:random'" in result.output


def test_ingest_and_migrate_refuse_a_weightless_model(collection):
    where, folder = collection
    refused(CliRunner().invoke(ingest_main, [*where, "--model", WEIGHTLESS, str(folder)]))
    refused(CliRunner().invoke(ingest_main, ["migrate", *where, "--model", WEIGHTLESS, str(folder)]))


def test_search_serve_and_duplicates_refuse_a_weightless_query_model(collection):
    where, _ = collection
    refused(CliRunner().invoke(search_main, [*where, "--model", WEIGHTLESS, "--text", "a red circle"]))
    refused(CliRunner().invoke(search_main, ["serve", *where, "--model", WEIGHTLESS, "--port", "0"]))
    refused(CliRunner().invoke(search_main, ["duplicates", *where, "--model", WEIGHTLESS]))
    accepted = CliRunner().invoke(search_main, [*where, "--model", TINY_SPEC, "--text", "a red circle", "--json"])
    assert accepted.exit_code == 0, accepted.output
    assert len(json.loads(accepted.stdout)["hits"]) == 6


def test_a_collection_that_records_a_bare_architecture_says_whose_spec_it_is(tmp_path, tiny_embedder):
    """Built before random weights had to be asked for: searching it without --model names the
    collection's spec and the two ways out."""
    import numpy as np

    from clip_ingest.connectors.backends import open_store
    from clip_ingest.connectors.backends.base import CollectionSpec, Point

    bare = TINY_SPEC.split(":")[0]
    with open_store("qdrant-edge", "images", path=str(tmp_path / "qdrant-edge")) as store:
        store.ensure_collection(CollectionSpec("images", tiny_embedder.dim, tiny_embedder.model_id, {}, model_spec=bare))
        vector = np.ones(tiny_embedder.dim, dtype=np.float32) / np.sqrt(tiny_embedder.dim)
        store.upsert([Point("00000000-0000-0000-0000-000000000001", vector, {"path": "/x.png"})])
    args = ["--target", "qdrant-edge", "--data-dir", str(tmp_path), "--text", "a cat"]
    refused = CliRunner().invoke(search_main, args)
    assert refused.exit_code == 2
    assert f"the model this collection records, '{bare}'" in refused.output and f"{bare}:random" in refused.output
    assert CliRunner().invoke(search_main, [*args, "--model", TINY_SPEC]).exit_code == 0
