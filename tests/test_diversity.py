"""benchmarks.scoring.diversity against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from benchmarks.scoring.diversity import distinct, diversity, first_references, mbleu4


def _scene(*shapes: str) -> dict:
    return {"objects": [{"shape": s, "colour": "red", "size": "small", "x": 0.5, "y": 0.5, "radius": 0.1,
                         "depth": k, "bbox": [0.4, 0.4, 0.6, 0.6]} for k, s in enumerate(shapes)]}


CAPTIONS = {"a": "a red circle", "b": "a red circle", "c": "a blue square near a red circle"}


def test_diversity_of_three_captions():
    d = diversity(CAPTIONS, train={"a red circle"}, objects={"a": _scene("circle"), "b": _scene("circle", "star"),
                                                             "c": _scene("square", "circle", "star")})
    assert d["vocabulary"] == 6  # a red circle blue square near
    assert d["distinct_1"] == pytest.approx(6 / 13)
    # bigrams: (a red) x3, (red circle) x3, (a blue), (blue square), (square near), (near a): 10, 6 distinct
    assert d["distinct_2"] == pytest.approx(6 / 10)
    assert d["unique"] == pytest.approx(1 / 3) and d["novel"] == pytest.approx(1 / 3)
    assert d["mean_length"] == pytest.approx(13 / 3)
    assert d["objects_named"] == pytest.approx(4 / 3) and d["objects_in_image"] == pytest.approx(6 / 3)


def test_without_the_dataset_novelty_and_objects_are_not_known():
    d = diversity(CAPTIONS)
    assert math.isnan(d["novel"]) and math.isnan(d["objects_named"]) and d["vocabulary"] == 6


def test_edge_cases():
    assert math.isnan(distinct([["one"]], 2))  # no bigram at all
    assert distinct([["x", "x", "x"]], 1) == pytest.approx(1 / 3)
    assert first_references({"i": {"generated": "g", "references": ["r1", "r2"]}}) == {"i": "r1"}


def test_mbleu4_of_one_images_captions():
    # each against the other: 1-grams 4/5, 2-grams 3/4, 3-grams 2/3, 4-grams 1/2, equal lengths
    assert mbleu4({"i": ["a b c d e", "a b c d f"]}) == pytest.approx((0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25, rel=1e-6)
    assert mbleu4({"i": ["a red circle here", "a red circle here"]}) == pytest.approx(1.0)  # collapsed
    assert mbleu4({"i": ["a b c d", "e f g h"]}) < 1e-6  # nothing shared
    assert math.isnan(mbleu4({"i": ["only one"]}))


def test_self_cider_against_a_hand_computed_kernel():
    from benchmarks.scoring.diversity import self_cider

    # two images, so every n-gram below is in one image: idf log 2 for all. Image "i": unigram cosine of
    # "a b" and "a c" is 1/2, bigrams share nothing, no trigram: K = [[2, 1/2], [1/2, 2]] / 4, eigenvalues
    # 5/8 and 3/8. Image "j": one caption twice, K has one non-zero eigenvalue: 0.
    expected_i = -math.log(math.sqrt(5 / 8) / (math.sqrt(5 / 8) + math.sqrt(3 / 8))) / math.log(2)
    assert self_cider({"i": ["a b", "a c"], "j": ["d e", "d e"]}) == pytest.approx(expected_i / 2)
    assert self_cider({"i": ["a b c d", "e f g h"], "j": ["x y", "x y"]}) == pytest.approx(0.5)  # i: K = I, so 1
    assert math.isnan(self_cider({"i": ["only one"]}))
