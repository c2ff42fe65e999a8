"""Metrics against rankings worked out by hand on points of the unit circle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_ingest.model.metrics import (
    caption_match_accuracy,
    class_text_embeddings,
    image_to_text_recall,
    knn_correct,
    mean_average_precision,
    recall_at_1,
    text_to_image_recall,
    zero_shot_accuracy,
)


def at(*degrees: float) -> np.ndarray:
    """Unit vectors at the given angles: cosine similarity falls with the angle between them."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# 0deg, 90deg, 20deg, 100deg. Rankings (self excluded):
# q0 -> 2, 1, 3   q1 -> 3, 2, 0   q2 -> 0, 1, 3   q3 -> 1, 2, 0
FOUR = at(0, 90, 20, 100)


def test_map_and_r1_when_nearest_neighbours_are_the_other_class():
    labels = ["a", "a", "b", "b"]
    # relevance: q0 [0,1,0] AP 1/2; q1 [0,0,1] AP 1/3; q2 [0,0,1] AP 1/3; q3 [0,1,0] AP 1/2
    assert mean_average_precision(FOUR, labels) == pytest.approx((1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    assert recall_at_1(FOUR, labels) == 0.0


def test_map_and_r1_perfect_when_nearest_neighbours_share_the_label():
    labels = [0, 1, 0, 1]
    assert mean_average_precision(FOUR, labels) == pytest.approx(1.0)
    assert recall_at_1(FOUR, labels) == 1.0


def test_map_with_several_relevant_items_and_a_query_without_any():
    emb = at(0, 90, 20, 100, 45, 200)
    labels = ["a", "a", "b", "b", "a", "c"]  # "c" has no other relevant item: skipped
    # q0 (0):   2(20) 4(45) 1(90) 3(100) 5(160) -> [0,1,1,0,0] AP (1/2+2/3)/2
    # q1 (90):  3(10) 4(45) 2(70) 0(90) 5(110)                 -> [0,1,0,1,0] AP (1/2+2/4)/2
    # q2 (20):  0(20) 4(25) 1(70) 3(80) 5(180)                 -> [0,0,0,1,0] AP 1/4
    # q3 (100): 1(10) 4(55) 2(80) then 0, 5 (both 100, both irrelevant) -> [0,0,1,0,0] AP 1/3
    # q4 (45):  2(25) then 0, 1 (both 45, both relevant) 3(55) 5(155)  -> [0,1,1,0,0] AP (1/2+2/3)/2
    expected = [(1 / 2 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2, 1 / 4, 1 / 3, (1 / 2 + 2 / 3) / 2]
    assert mean_average_precision(emb, labels) == pytest.approx(np.mean(expected), abs=1e-6)
    assert recall_at_1(emb, labels) == 0.0


def test_all_vs_all_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="unique"):
        mean_average_precision(FOUR, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="one entry per row"):
        recall_at_1(FOUR, [1, 2])


def test_knn_weighting_by_temperature_decides_the_vote():
    train = at(0, 10, 20, 90)
    labels = ["a", "b", "b", "a"]
    test = at(0)
    # k=3 neighbours 0(a, sim 1), 1(b, .985), 2(b, .940)
    # T=0.1:  a e^10 = 22026 < b e^9.85 + e^9.40 = 30967 -> b
    # T=0.01: a e^100 > b e^98.5 (1 + e^-4.5)           -> a
    assert knn_correct(train, labels, test, ["b"], k=3, temperature=0.1).mean() == 1.0
    assert knn_correct(train, labels, test, ["a"], k=3, temperature=0.01).mean() == 1.0
    assert knn_correct(train, labels, test, ["a"], k=1).mean() == 1.0
    # k larger than the training set: all four vote. At 0: a e^10 + e^0 < b 30967 -> b (right);
    # at 85: a e^0.87 + e^9.96 > b e^2.59 + e^4.23 -> a (labelled b here: wrong)
    assert knn_correct(train, labels, at(0, 85), ["b", "b"], k=21).mean() == 0.5


def test_zero_shot_averages_templates_per_class():
    vectors = {
        "a photo of a cat": at(0)[0],
        "a drawing of a cat": at(40)[0],  # cat classifier: mean -> 20 degrees
        "a photo of a dog": at(90)[0],
        "a drawing of a dog": at(70)[0],  # dog classifier: 80 degrees
    }

    def embed(prompts):
        return np.stack([vectors[p] for p in prompts])

    classes = class_text_embeddings(embed, ["cat", "dog"], ["a photo of a {class}", "a drawing of a {}"])
    np.testing.assert_allclose(classes, at(20, 80), atol=1e-6)
    # images at 45 (nearer 20 -> cat), 55 (nearer 80 -> dog), 0 (cat)
    assert zero_shot_accuracy(at(45, 55, 0), [0, 1, 0], classes) == 1.0
    assert zero_shot_accuracy(at(45, 55, 0), [1, 1, 1], classes) == pytest.approx(1 / 3)


def test_text_and_image_recall_at_k():
    images = at(0, 90, 180)
    # caption -> image:  0,0,1,2
    texts = at(10, 100, 85, 30)
    owner = [0, 0, 1, 2]
    # t0 (10):  ranks 0, 1, 2 -> own image first
    # t1 (100): ranks 1, 2, 0 -> own image (0) third
    # t2 (85):  ranks 1, 0, 2 -> first
    # t3 (30):  ranks 0, 1, 2 -> own image (2) third
    t2i = text_to_image_recall(texts, images, owner, ks=(1, 2, 3))
    assert t2i == pytest.approx({"R@1": 0.5, "R@2": 0.5, "R@3": 1.0})
    # i0 (0):   texts by angle t0(10) t3(30) t2(80) t1(100) -> t0 is its own: rank 1
    # i1 (90):  t2(5) t1(10) ... -> own t2 at rank 1
    # i2 (180): t1(80) t2(95) t3(150) -> own t3 at rank 3
    i2t = image_to_text_recall(images, texts, owner, ks=(1, 2, 3))
    assert i2t == pytest.approx({"R@1": 2 / 3, "R@2": 2 / 3, "R@3": 1.0})


def test_image_to_text_needs_a_caption_per_image():
    with pytest.raises(ValueError, match="at least one caption"):
        image_to_text_recall(at(0, 90), at(0), [0])


def test_metrics_scale_beyond_one_query_block():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    labels = np.repeat(np.arange(10), 120)
    emb = centres[labels] + 0.05 * rng.normal(size=(1200, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert mean_average_precision(emb, labels) == pytest.approx(1.0)
    assert recall_at_1(emb, labels) == 1.0
    assert math.isclose(knn_correct(emb[::2], labels[::2], emb[1::2], labels[1::2]).mean(), 1.0)


def test_caption_match_accuracy_counts_images_whose_best_caption_is_their_own():
    images = at(0, 90, 45)
    captions = at(10, 85, 200)  # image 2 at 45deg: 35deg from caption 0, 40deg from caption 1 -> caption 0
    assert caption_match_accuracy(images, captions, [{0}, {1}, {1}]) == pytest.approx(2 / 3)
    assert caption_match_accuracy(images, captions, [{0}, {1}, {0, 1}]) == 1.0  # any own caption counts
    assert caption_match_accuracy(images, captions, [{2}, {2}, {2}]) == 0.0


def test_caption_match_accuracy_needs_a_caption_for_every_image():
    with pytest.raises(ValueError, match="every image"):
        caption_match_accuracy(at(0, 90), at(0), [{0}, set()])
    with pytest.raises(ValueError, match="every image"):
        caption_match_accuracy(at(0, 90), at(0), [{0}])


def test_a_collapsed_model_scores_chance_on_a_gallery_sorted_by_class():
    """Every vector equal: with ties broken by position, each query's own class (loaded first)
    would rank on top; neutral ties give the chance level of a random ranking."""
    labels = np.repeat(np.arange(20), 40)  # 20 objects x 40 views, sorted like ETH-80's folders
    collapsed = np.ones((len(labels), 8), dtype=np.float32) / np.sqrt(8)
    chance = 39 / (len(labels) - 1)  # fraction of relevant items in each ranking
    assert mean_average_precision(collapsed, labels) == pytest.approx(chance, abs=0.02)
    assert recall_at_1(collapsed, labels) == pytest.approx(chance, abs=0.03)
    class_rows = np.ones((20, 8), dtype=np.float32) / np.sqrt(8)
    assert zero_shot_accuracy(collapsed, labels, class_rows) == pytest.approx(1 / 20, abs=0.04)


def test_include_query_counts_the_query_as_a_relevant_hit():
    emb = np.eye(4, dtype=np.float32)  # orthogonal: every other item ties at similarity 0
    labels = [0, 0, 1, 1]
    # with the query: it ranks first, its partner among the three ties
    with_query = mean_average_precision(emb, labels, include_query=True)
    without = mean_average_precision(emb, labels)
    assert with_query > without
    assert mean_average_precision(emb, labels, include_query=True) == with_query  # deterministic


@pytest.mark.parametrize("bad", [[0, 3], [-1, 0]])
def test_recall_rejects_caption_indices_out_of_range(bad):
    texts, images = np.eye(2, dtype=np.float32), np.eye(3, dtype=np.float32)[:2, :2]
    with pytest.raises(ValueError, match="out of range"):
        text_to_image_recall(texts, images, bad)
    with pytest.raises(ValueError, match="out of range"):
        image_to_text_recall(images, texts, bad)


def test_zero_shot_and_caption_match_reject_indices_out_of_range():
    images = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match="out of range"):
        zero_shot_accuracy(images, [0, 2], np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="out of range"):
        caption_match_accuracy(images, np.eye(2, dtype=np.float32), [{0}, {5}])
