"""Study statistics against references: corpus BLEU from per-image statistics equals pycocoevalcap's,
t-intervals equal the textbook values, and the paired bootstrap finds a real difference and no fake one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.scoring.metrics import coco_scores
from benchmarks.scoring.stats import (
    aa_false_positive_rate,
    bleu_stats,
    corpus_bleu,
    corpus_bleu_many,
    hierarchical_bootstrap,
    holm,
    mean_ci,
    median_interval,
    paired_bootstrap,
    seed_level_test,
    seeds_needed,
    t_critical,
    verdict,
)

WORDS = "a red blue green circle square star on the left right of small big near above".split()


def _captions(rng, n):
    return " ".join(rng.choice(WORDS, size=rng.integers(2, 12)))


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    refs = {f"i{k}": [_captions(rng, 0) for _ in range(5)] for k in range(60)}
    hyps = {i: (r[0] if k % 3 == 0 else _captions(rng, 0)) for k, (i, r) in enumerate(refs.items())}
    return refs, hyps


def test_corpus_bleu_from_statistics_equals_pycocoevalcap(corpus):
    refs, hyps = corpus
    ids = sorted(refs)
    stats = np.stack([bleu_stats(refs[i], hyps[i]) for i in ids])
    reference = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
    assert 0.05 < reference < 0.95
    assert corpus_bleu(stats) == pytest.approx(reference, rel=1e-9)


def test_t_interval_matches_textbook():
    assert t_critical(2) == pytest.approx(4.303, abs=5e-4) and t_critical(1000) == pytest.approx(1.962, abs=5e-4)
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci([0.5])[1])


def test_paired_bootstrap_separates_better_from_equal(corpus):
    refs, hyps = corpus
    ids = sorted(refs)
    better = {i: refs[i][1] for i in ids}  # a reference caption: far better than random words
    a = np.stack([bleu_stats(refs[i], hyps[i]) for i in ids])
    b = np.stack([bleu_stats(refs[i], better[i]) for i in ids])
    cider = coco_scores(refs, hyps, meteor=False)[1]
    cider_b = coco_scores(refs, better, meteor=False)[1]
    ca = np.array([cider[i]["CIDEr"] for i in ids])
    cb = np.array([cider_b[i]["CIDEr"] for i in ids])
    res = paired_bootstrap(a, b, ca, cb, samples=500)
    assert res["BLEU-4"]["diff"] > 0 and res["BLEU-4"]["ci"][0] > 0 and res["BLEU-4"]["p"] < 0.01
    assert res["CIDEr"]["diff"] > 0 and res["CIDEr"]["p"] < 0.01
    same = paired_bootstrap(a, a.copy(), ca, ca.copy(), samples=200)
    assert same["BLEU-4"]["diff"] == 0 and same["BLEU-4"]["p"] == 1.0
    json.dumps(res)  # goes into reports as is


def test_vectorised_corpus_bleu_equals_the_scalar_one(corpus):
    refs, hyps = corpus
    stats = np.stack([bleu_stats(refs[i], hyps[i]) for i in sorted(refs)])
    halves = np.stack([stats[:30].sum(0), stats[30:].sum(0)])
    np.testing.assert_allclose(corpus_bleu_many(halves), [corpus_bleu(stats[:30]), corpus_bleu(stats[30:])], rtol=1e-12)


def _simulate(rng, seeds: int, delta: float = 0.0, images: int = 200):
    """Per-image scores of two configurations with known components: an image effect both share,
    a configuration x image effect, a seed effect (sd 0.03) and per-run noise; the true difference is delta."""
    shared = rng.normal(0, 0.3, images)
    runs = []
    for mu in (0.5, 0.5 + delta):
        own = rng.normal(0, 0.1, images)
        runs.append([mu + shared + own + rng.normal(0, 0.03) + rng.normal(0, 0.2, images) for _ in range(seeds)])
    return runs


def test_seed_level_interval_covers_the_true_difference_and_an_image_bootstrap_does_not():
    """Repeated simulations with seed and image variance (the A/A case: no true difference): the seed-level
    95% interval covers 0 at least 95% of the time, i.e. its false-positive rate is at most about 5% (with
    Hsu's degrees of freedom it is conservative); the image bootstrap of seed-averaged scores, blind to seed
    variance, covers far less often, and resampling the seeds too falls short of 95%."""
    rng = np.random.default_rng(7)
    hits = {"seed-level": 0, "hierarchical": 0, "images only": 0}
    trials = 200
    for k in range(trials):
        a, b = _simulate(rng, seeds=3)
        lo, hi = seed_level_test("CIDEr", a, b, samples=300, seed=k)["ci"]
        hits["seed-level"] += lo <= 0 <= hi
        lo, hi = hierarchical_bootstrap("CIDEr", a, b, samples=300, seed=k)["ci"]
        hits["hierarchical"] += lo <= 0 <= hi
        zeros = np.zeros((len(a[0]), 10))
        lo, hi = paired_bootstrap(zeros, zeros, np.mean(a, 0), np.mean(b, 0), samples=300, seed=k)["CIDEr"]["ci"]
        hits["images only"] += lo <= 0 <= hi
    coverage = {k: v / trials for k, v in hits.items()}
    assert coverage["seed-level"] >= 0.94, coverage
    assert coverage["images only"] < 0.85, coverage
    assert coverage["hierarchical"] < coverage["seed-level"], coverage


def test_seed_level_test_finds_a_real_difference_and_says_what_it_could_detect():
    rng = np.random.default_rng(1)
    a, b = _simulate(rng, seeds=5, delta=0.15)
    t = seed_level_test("CIDEr", a, b, samples=500)
    assert t["ci"][0] > 0 and t["p"] < 0.01 and t["mde"] < 0.15
    assert t["var_seeds"] > 0 and t["var_images"] > 0 and t["df"] == 4  # the smaller side's seeds - 1
    one = seed_level_test("CIDEr", a[:1], b[:1], samples=200)
    assert one["p"] is None and one["var_seeds"] is None  # one seed: no between-seed inference


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.5, None, 0.9])  # None (a one-seed row) is neither adjusted nor counted
    assert adjusted[1] is None and adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)  # monotone


@pytest.mark.parametrize("expect, diffs, adjusted, expected", [
    ("higher", (0.02, 0.05), (0.01, 0.02), "supported"),
    ("higher", (-0.02, -0.05), (0.01, 0.6), "contradicted"),
    ("lower", (-0.02, -0.05), (0.01, 0.02), "supported"),
    ("higher", (0.02, -0.05), (0.01, 0.02), "mixed"),
    ("higher", (0.02, 0.05), (0.2, 0.06), "inconclusive"),
    (None, (0.02, 0.05), (0.2, 0.01), "higher"),
    (None, (0.02, 0.05), (0.2, 0.3), "no detectable difference"),
])
def test_verdicts(expect, diffs, adjusted, expected):
    tests = {m: {"diff": d, "p": p} for m, d, p in zip(("BLEU-4", "CIDEr"), diffs, adjusted, strict=True)}
    assert verdict(expect, tests, dict(zip(("BLEU-4", "CIDEr"), adjusted, strict=True))) == expected
    single = {m: {"diff": 0.1, "p": None} for m in ("BLEU-4", "CIDEr")}
    assert verdict("higher", single, {"BLEU-4": None, "CIDEr": None}).startswith("inconclusive (one seed")


def test_seeds_needed_grows_as_the_effect_shrinks_and_stops_at_the_image_floor():
    small, large = seeds_needed(0.01, 1e-4, 1e-6), seeds_needed(0.03, 1e-4, 1e-6)
    assert large < small and large >= 2
    assert seeds_needed(0.01, 1e-4, 1e-4) is None  # 2.8 x SE(images) = 0.028 > 0.01 whatever the seeds


def test_median_interval_from_order_statistics():
    med, lo, hi, coverage = median_interval([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (med, lo, hi) == (3.0, 1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)
    med, lo, hi, coverage = median_interval(list(range(1, 11)))
    assert (lo, hi) == (2, 9) and coverage == pytest.approx(1 - 2 * 11 / 1024)
    assert median_interval([1.0, math.inf, math.inf])[0] == math.inf  # most runs never reached the target


def test_aa_splits_of_one_configuration_rarely_differ():
    rng = np.random.default_rng(3)
    runs = _simulate(rng, seeds=8)[0]  # 8 seeds of one configuration
    r = aa_false_positive_rate("CIDEr", runs, group=3, splits=200, samples=200)
    assert r["splits"] == 200 and r["rate"] <= 0.12, r
    with pytest.raises(ValueError, match="cannot make two disjoint groups"):
        aa_false_positive_rate("CIDEr", runs[:5], group=3)


def test_a_paired_test_gains_power_where_seeds_move_both_sides_and_keeps_its_level_where_not():
    """Runs of the same seed share batches and initial draws: where that moves both configurations alike,
    pairing removes it from the difference. Without such a shared effect, pairing keeps the level."""
    from benchmarks.scoring.stats import paired_seed_level_test

    rng = np.random.default_rng(11)
    shared_images = rng.normal(0, 0.3, 200)
    seed_effects = rng.normal(0, 0.05, 5)  # each seed moves both configurations by the same amount

    def runs(mu):
        return [mu + shared_images + s + rng.normal(0, 0.05, 200) for s in seed_effects]

    a, b = runs(0.5), runs(0.52)
    paired, unpaired = paired_seed_level_test("CIDEr", a, b, samples=300), seed_level_test("CIDEr", a, b, samples=300)
    assert paired["se"] < unpaired["se"] / 2 and paired["p"] < 0.01 < unpaired["p"]
    assert paired["df"] == 4 and paired["seeds"] == (5, 5)
    hits, trials = 0, 200
    for k in range(trials):
        x, y = _simulate(rng, seeds=3)  # independent seeds: nothing shared by run k of each side
        lo, hi = paired_seed_level_test("CIDEr", x, y, samples=200, seed=k)["ci"]
        hits += lo <= 0 <= hi
    assert hits / trials >= 0.94, hits / trials
    with pytest.raises(ValueError, match="same seeds on both sides"):
        paired_seed_level_test("CIDEr", a, b[:4])
