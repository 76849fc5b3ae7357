"""benchmarks.scoring.metrics against the reference implementations and against BLEU computed by hand."""

from __future__ import annotations

import math

import pytest

from benchmarks.scoring.metrics import coco_scores, human_ceiling, nltk_bleu4
from shared_data import synthetic
from shared_data.text import tokenize

BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")


@pytest.fixture(scope="module")
def generated() -> dict[str, list[str]]:
    """Image id -> the generator's five captions, tokenised: a realistic caption set."""
    out = {}
    for i in range(200):
        _, captions = synthetic.generate_scene(0, i)
        out[f"img{i:03d}"] = [" ".join(tokenize(c)) for c in captions]
    return out


@pytest.fixture(scope="module")
def realistic(generated) -> tuple[dict[str, list[str]], dict[str, str]]:
    """References: captions 2-5; hypothesis: caption 1 of the NEXT image for every third image, so that
    scores are neither perfect nor zero."""
    ids = sorted(generated)
    refs = {i: generated[i][1:] for i in ids}
    hyps = {i: generated[ids[(k + 1) % len(ids)] if k % 3 == 0 else i][0] for k, i in enumerate(ids)}
    return refs, hyps


def test_coco_scores_equal_pycocoevalcap(realistic):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = realistic
    corpus, per_image = coco_scores(refs, hyps, meteor=False)
    assert set(corpus) == {*BLEU, "ROUGE-L", "CIDEr"}
    gts = {i: list(r) for i, r in refs.items()}
    res = {i: [h] for i, h in hyps.items()}
    ids = list(gts)
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    expected = {**dict(zip(BLEU, bleu, strict=True)), "ROUGE-L": rouge, "CIDEr": cider}
    for name, value in expected.items():
        assert corpus[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    for k, i in enumerate(ids):
        for n, name in enumerate(BLEU):
            assert per_image[i][name] == pytest.approx(bleu_per[n][k], rel=1e-12, abs=1e-15)
        assert per_image[i]["ROUGE-L"] == pytest.approx(rouge_per[k], rel=1e-12, abs=1e-15)
        assert per_image[i]["CIDEr"] == pytest.approx(cider_per[k], rel=1e-12, abs=1e-15)
    assert 0.1 < corpus["BLEU-4"] < 0.9 and 0.1 < corpus["CIDEr"] < 5  # neither trivial nor saturated


def test_bleu_by_hand():
    # identical hypothesis and reference: every n-gram precision is 1 and there is no brevity penalty
    same, _ = coco_scores({"a": ["a red circle on the left"]}, {"a": "a red circle on the left"}, meteor=False)
    for name in BLEU:
        assert same[name] == pytest.approx(1.0, abs=1e-8)
    assert same["ROUGE-L"] == pytest.approx(1.0)
    # "the cat sat on the mat" vs "the cat is on the mat": equal lengths (BP = 1); clipped matches
    # 1-grams 5/6, 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3
    s, _ = coco_scores({"a": ["the cat is on the mat"]}, {"a": "the cat sat on the mat"}, meteor=False)
    assert s["BLEU-1"] == pytest.approx(5 / 6, rel=1e-8)
    assert s["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), rel=1e-8)
    assert s["BLEU-3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), rel=1e-8)  # = 0.5
    assert s["BLEU-4"] < 1e-3  # no 4-gram matches; pycocoevalcap's 1e-15 smoothing keeps it just above 0
    # brevity penalty: 2 words against a 6-word reference, exp(1 - 6/2)
    s, _ = coco_scores({"a": ["the cat sat on the mat"]}, {"a": "the cat"}, meteor=False)
    assert s["BLEU-1"] == pytest.approx(math.exp(-2), rel=1e-8)
    assert s["BLEU-2"] == pytest.approx(math.exp(-2), rel=1e-8)
    # ... measured against the CLOSEST reference length: the 2-word reference removes the penalty
    s, _ = coco_scores({"a": ["the cat sat on the mat", "a cat"]}, {"a": "the cat"}, meteor=False)
    assert s["BLEU-1"] == pytest.approx(1.0, rel=1e-8)


def test_nltk_bleu4_agrees_with_pycocoevalcap(realistic):
    """Both use clipped counts and the closest reference length (ties to the shorter), so they agree
    exactly, except that nltk counts one phantom n-gram in the denominator when a hypothesis is
    shorter than n words (`max(1, denominator)` in modified_precision), where pycocoevalcap counts
    none: a small downward bias that grows with the share of very short hypotheses."""
    refs, hyps = realistic
    coco = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
    assert nltk_bleu4(refs, hyps) == pytest.approx(coco, abs=2e-3)
    short = [i for i, h in hyps.items() if len(h.split()) < 4]
    assert short, "the generator makes some 1-3 word captions; this test relies on one"
    long_refs = {i: r for i, r in refs.items() if i not in short}
    long_hyps = {i: h for i, h in hyps.items() if i not in short}
    long_coco = coco_scores(long_refs, long_hyps, meteor=False)[0]["BLEU-4"]
    assert nltk_bleu4(long_refs, long_hyps) == pytest.approx(long_coco, rel=1e-8)


def test_empty_hypothesis_scores_zero():
    refs = {"a": ["a red circle on the left", "a small red disc"], "b": ["a blue square", "a navy box at the top"]}
    for empty in ("", "   "):
        corpus, per_image = coco_scores(refs, {"a": empty, "b": "a blue square"}, meteor=False)
        for name in BLEU:
            assert per_image["a"][name] < 1e-6
        assert per_image["a"]["ROUGE-L"] == 0.0 and per_image["a"]["CIDEr"] == 0.0
        assert per_image["b"]["BLEU-1"] == pytest.approx(1.0, abs=1e-8)
    corpus, _ = coco_scores({"a": refs["a"]}, {"a": ""}, meteor=False)
    assert all(corpus[name] < 1e-6 for name in BLEU)
    assert nltk_bleu4({"a": refs["a"]}, {"a": ""}) == 0.0


def test_mismatched_images_are_an_error():
    with pytest.raises(ValueError, match="same images"):
        coco_scores({"a": ["a circle"]}, {"b": "a circle"}, meteor=False)


def test_meteor_runs_and_ranks():
    """One METEOR call (Java start-up is a few seconds): identical > unrelated, empty does not crash."""
    refs = {"same": ["a red circle on the left", "a small red disc at the left"],
            "unrelated": ["a blue square in the top right corner", "a navy box at the top right"],
            "empty": ["a green star", "an emerald five pointed star"],
            "close": ["a pink heart next to a black ring", "a pink heart beside a jet black hoop"]}
    hyps = {"same": "a red circle on the left", "unrelated": "two yellow hearts beneath it", "empty": "",
            "close": "a pink heart near a black ring"}
    corpus, per_image = coco_scores(refs, hyps, meteor=True)
    assert 0.0 <= corpus["METEOR"] <= 1.0
    meteor = {i: per_image[i]["METEOR"] for i in refs}
    assert all(0.0 <= v <= 1.0 for v in meteor.values())
    assert meteor["same"] > meteor["close"] > meteor["unrelated"]
    assert meteor["empty"] == pytest.approx(0.0, abs=1e-6)


def test_human_ceiling(generated):
    ceiling = human_ceiling(generated)
    assert set(ceiling) == {*BLEU, "ROUGE-L", "CIDEr"}
    for name in (*BLEU, "ROUGE-L"):
        assert 0.0 < ceiling[name] < 1.0, name
    assert ceiling["CIDEr"] > 0.0
    # a caption scored against itself is the most any caption can get
    itself, _ = coco_scores({i: [c[0]] for i, c in generated.items()}, {i: c[0] for i, c in generated.items()},
                            meteor=False)
    for name in ceiling:
        assert ceiling[name] < itself[name], name
    assert itself["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and itself["ROUGE-L"] == pytest.approx(1.0)
    # it is what the first caption scores against the other four
    refs = {i: c[1:] for i, c in generated.items()}
    assert ceiling == coco_scores(refs, {i: c[0] for i, c in generated.items()}, meteor=False)[0]
    assert human_ceiling({"a": ["only one caption"]}) == {}
