"""Grounded scores: the generator's own captions are all true, another image's are not, and each rule holds."""

from __future__ import annotations

import math

import pytest

from benchmarks.scoring.grounding import grounded_scores, per_image_grounding
from shared_data import synthetic, synthetic_captions, synthetic_scene
from shared_data.text import tokenize

RATES = ("colour_acc", "shape_precision", "size_acc", "relation_acc", "count_acc")


def _ground_truth(n: int, seed: int = 0) -> tuple[list[list[str]], list[dict]]:
    captions, objects = [], []
    for i in range(n):
        scene, caps = synthetic.generate_scene(seed, i)
        captions.append([" ".join(tokenize(c)) for c in caps])
        objects.append({"objects": [o.to_json() for o in scene.objects], "background": scene.background,
                        "tone": scene.tone})
    return captions, objects


@pytest.fixture(scope="module")
def generated():
    return _ground_truth(200)


def _corpus(captions: list[list[str]], objects: list[dict]) -> dict[str, float]:
    """Every caption of image i scored against objects[i]."""
    caps, objs = {}, {}
    for i, (cs, o) in enumerate(zip(captions, objects, strict=True)):
        for k, c in enumerate(cs):
            caps[f"{i}_{k}"] = c
            objs[f"{i}_{k}"] = o
    return grounded_scores(caps, objs)


def test_ground_truth_captions_are_all_true(generated):
    scores = _corpus(*generated)
    assert scores["n_captions"] == 1000
    for rate in RATES:
        assert scores[rate] == 1.0, rate
    assert scores["hallucination_rate"] == 0.0
    # not vacuous: every rule was exercised many times
    assert scores["n_colour"] > 1000 and scores["n_shape"] > 1000 and scores["n_size"] > 300
    assert scores["n_relation"] > 100 and scores["n_count"] > 20
    # many captions name only the biggest object, so recall is well below 1
    assert 0.5 < scores["shape_recall"] < 0.9


def test_captions_of_another_scene_score_much_lower(generated):
    captions, objects = generated
    shifted = captions[1:] + captions[:1]  # image i gets image i+1's captions
    scores = _corpus(shifted, objects)
    assert scores["shape_precision"] < 0.4 and scores["hallucination_rate"] > 0.6
    assert scores["colour_acc"] < 0.2 and scores["size_acc"] < 0.2
    assert scores["relation_acc"] < 0.2 and scores["shape_recall"] < 0.3
    assert scores["count_acc"] < 0.6  # "two shapes" is right by chance for every 2-object image


# ----------------------------------------------------------------------------- handmade scenes
def _obj(shape: str, colour: str, size: str, x: float, y: float, r: float, depth: int) -> dict:
    half_w = r * (1.5 if shape == "rectangle" else 1.0)
    half_h = r * (0.6 if shape == "rectangle" else 1.0)
    return synthetic_scene.SceneObject(shape, colour, size, x, y, r, depth,
                                 (x - half_w, y - half_h, x + half_w, y + half_h)).to_json()


# a small red circle far to the left of a large blue square
FAR = {"objects": [_obj("circle", "red", "small", 20, 64, 10, 0), _obj("square", "blue", "large", 100, 64, 24, 1)],
       "background": "striped", "tone": "beige"}
# a green star partly behind a yellow heart, and a white ring close to (not touching) both
CLOSE = {"objects": [_obj("star", "green", "medium", 40, 40, 15, 0), _obj("heart", "yellow", "medium", 52, 46, 15, 1),
                     _obj("ring", "white", "small", 40, 72, 10, 2)], "background": "plain", "tone": "slate"}
# two circles of different colours and a square
COUNTS = {"objects": [_obj("circle", "red", "small", 20, 20, 10, 0), _obj("circle", "pink", "small", 100, 20, 10, 1),
                      _obj("square", "grey", "medium", 60, 100, 15, 2)], "background": "dotted", "tone": "mint"}


def _score(caption: str, scene: dict) -> dict[str, float]:
    return grounded_scores({"img": caption}, {"img": scene})


def test_scenes_are_what_the_tests_assume():
    def rel(scene, a, b):
        objs = [synthetic_scene.SceneObject(**{**o, "bbox": tuple(o["bbox"])}) for o in scene["objects"]]
        return synthetic_captions.relation(objs[a], objs[b])

    assert rel(FAR, 0, 1) == "left" and rel(FAR, 1, 0) == "right"
    assert rel(CLOSE, 0, 1) == "behind" and rel(CLOSE, 1, 0) == "front"
    assert rel(CLOSE, 2, 0) == "near" and rel(CLOSE, 2, 1) == "near"


def test_hallucinated_shape():
    s = _score("a red circle and a purple triangle", FAR)
    assert s["n_shape"] == 2 and s["shape_precision"] == 0.5 and s["hallucination_rate"] == 0.5
    assert s["n_colour"] == 2 and s["colour_acc"] == 0.5  # "purple" names no triangle: there is none
    assert s["n_recall"] == 2 and s["shape_recall"] == 0.5  # the square is not mentioned


def test_wrong_colour_is_a_colour_of_another_object():
    s = _score("a blue circle and a red square", FAR)
    assert s["colour_acc"] == 0.0 and s["n_colour"] == 2
    assert s["shape_precision"] == 1.0 and s["shape_recall"] == 1.0


def test_synonyms_and_multiword_phrases():
    s = _score("a little scarlet round shape to the left of a huge navy box", FAR)
    assert s["n_shape"] == 2 and s["shape_precision"] == 1.0
    assert s["n_colour"] == 2 and s["colour_acc"] == 1.0
    assert s["n_size"] == 2 and s["size_acc"] == 1.0
    assert s["n_relation"] == 1 and s["relation_acc"] == 1.0
    # "five pointed star" and "six sided shape" are shapes, not counts
    s = _score("a five pointed star and a six sided shape", CLOSE)
    assert s["n_shape"] == 2 and s["shape_precision"] == 0.5 and s["n_count"] == 0


def test_wrong_size():
    s = _score("a large red circle and a tiny square", FAR)
    assert s["n_size"] == 2 and s["size_acc"] == 0.0


def test_relations():
    assert _score("a red circle to the right of a blue square", FAR)["relation_acc"] == 0.0
    assert _score("the square is right of the disc", FAR)["relation_acc"] == 1.0
    assert _score("a red circle above the square", FAR)["relation_acc"] == 0.0
    # colour narrows the objects a phrase can mean: there is no blue circle
    assert _score("a blue circle left of the square", FAR)["relation_acc"] == 0.0
    # overlap decides front/behind by drawing order
    assert _score("a heart in front of a star", CLOSE)["relation_acc"] == 1.0
    assert _score("a star partly covering a heart", CLOSE)["relation_acc"] == 0.0
    assert _score("a star partly hidden behind a heart", CLOSE)["relation_acc"] == 1.0


def test_near_holds_for_close_and_overlapping_pairs():
    assert _score("a ring next to a star", CLOSE)["relation_acc"] == 1.0
    assert _score("a star beside a heart", CLOSE)["relation_acc"] == 1.0  # overlapping: near in any direction
    assert _score("a circle near a square", FAR)["relation_acc"] == 0.0


def test_it_refers_to_the_first_object():
    s = _score("a blue square on the right and a red circle left of it", FAR)
    assert s["n_relation"] == 1 and s["relation_acc"] == 1.0
    assert _score("a blue square on the right and a red circle right of it", FAR)["relation_acc"] == 0.0


def test_positions_are_not_relations():
    for caption in ("a red circle near the top", "a red circle at the left of the picture",
                    "a red circle on the left side", "a red circle on top of the picture"):
        s = _score(caption, FAR)
        assert s["n_relation"] == 0 and math.isnan(s["relation_acc"]), caption


def test_counts():
    assert _score("a picture shows two circles and a square", COUNTS)["count_acc"] == 1.0
    assert _score("a picture shows three circles", COUNTS)["count_acc"] == 0.0
    assert _score("the drawing has three shapes", COUNTS)["count_acc"] == 1.0
    assert _score("the drawing has two objects", COUNTS)["count_acc"] == 0.0
    assert _score("four figures", COUNTS)["count_acc"] == 0.0
    s = _score("two squares and three figures", COUNTS)
    assert s["n_count"] == 2 and s["count_acc"] == 0.5
    assert s["n_shape"] == 1 and s["shape_precision"] == 1.0  # plurals are shape mentions; "figures" is not


def test_background_phrase_is_not_an_object():
    s = _score("a red circle on a blue striped background", FAR)
    assert s["n_colour"] == 1 and s["colour_acc"] == 1.0  # "blue" describes the background
    s = _score("against a white polka dot canvas a red circle", FAR)
    assert s["n_colour"] == 1 and s["colour_acc"] == 1.0
    # "over" introduces the background here, not a relation
    s = _score("a red circle over a beige plain surface", FAR)
    assert s["n_relation"] == 0 and s["n_shape"] == 1


def test_nothing_mentioned_is_nan_not_zero():
    for caption in ("a picture of something", "on a striped background", ""):
        s = _score(caption, FAR)
        assert s["n_captions"] == 1
        for rate in (*RATES, "hallucination_rate"):
            assert math.isnan(s[rate]), (caption, rate)
        assert s["n_shape"] == s["n_colour"] == s["n_size"] == s["n_relation"] == s["n_count"] == 0
        assert s["shape_recall"] == 0.0 and s["n_recall"] == 2


def test_per_image_and_bare_object_lists():
    per = per_image_grounding({"a": "a red circle", "b": "a purple triangle"}, {"a": FAR, "b": FAR["objects"]})
    assert per["a"]["shape_precision"] == 1.0 and per["b"]["shape_precision"] == 0.0
    assert math.isnan(per["a"]["relation_acc"])
    corpus = grounded_scores({"a": "a red circle", "b": "a purple triangle"}, {"a": FAR, "b": FAR})
    assert corpus["shape_precision"] == 0.5 and corpus["n_shape"] == 2


def test_missing_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="no ground truth"):
        grounded_scores({"a": "a circle", "b": "a square"}, {"a": FAR})
