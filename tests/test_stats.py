"""Study statistics against references: corpus BLEU from per-image statistics equals pycocoevalcap's,
t-intervals equal the textbook values, and the paired bootstrap finds a real difference and no fake one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.metrics import coco_scores
from benchmarks.stats import bleu_stats, corpus_bleu, mean_ci, paired_bootstrap, t_critical

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
    assert t_critical(2) == 4.303 and t_critical(1000) == 1.96
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
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
