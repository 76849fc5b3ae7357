"""Statistics for studies: confidence intervals over seeds, paired bootstrap over test images.

- Across seeds, a quality number is reported as mean +- the half-width of a 95% t-interval
  (n - 1 degrees of freedom): with 3 seeds that half-width is 2.48 standard deviations, which is
  what honest small-sample error bars look like.
- Two plugins are compared on the same test images by a paired bootstrap (Koehn 2004): resample
  the images with replacement, recompute both systems' corpus scores on the resample, and look at
  the distribution of the difference. Corpus BLEU-4 is not a mean of per-image scores, so each
  image carries its BLEU sufficient statistics (clipped n-gram matches, n-gram counts, hypothesis
  length, closest reference length) and every resample's BLEU-4 is computed from their sums, the
  way pycocoevalcap computes the corpus score. CIDEr-D is a mean of per-image scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

# two-sided 95% critical values of Student's t for 1..30 degrees of freedom (scipy is not a dependency)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_critical(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); the half-width is NaN for a single value."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(t_critical(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu_stats(references: Sequence[str], hypothesis: str, max_n: int = 4) -> np.ndarray:
    """One image's sufficient statistics: [matches_1..4, totals_1..4, hyp length, closest ref length]."""
    hyp = hypothesis.split()
    refs = [r.split() for r in references]
    out = np.zeros(2 * max_n + 2)
    for n in range(1, max_n + 1):
        counts = _ngrams(hyp, n)
        best: Counter = Counter()
        for r in refs:
            best |= _ngrams(r, n)  # max count of each n-gram over the references (clipping)
        out[n - 1] = sum(min(c, best[g]) for g, c in counts.items())
        out[max_n + n - 1] = max(len(hyp) - n + 1, 0)
    out[2 * max_n] = len(hyp)
    # pycocoevalcap's "closest" reference length, ties to the shorter
    out[2 * max_n + 1] = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    return out


def corpus_bleu(stats: np.ndarray, max_n: int = 4) -> float:
    """Corpus BLEU-max_n from summed statistics (rows = images), with pycocoevalcap's tiny smoothing."""
    s = stats.sum(0) if stats.ndim == 2 else stats
    tiny, small = 1e-15, 1e-9
    log_p = sum(math.log((s[n] + tiny) / (s[max_n + n] + small)) for n in range(max_n)) / max_n
    ratio = (s[2 * max_n] + tiny) / (s[2 * max_n + 1] + small)
    bp = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    return bp * math.exp(log_p)


def paired_bootstrap(bleu_a: np.ndarray, bleu_b: np.ndarray, cider_a: np.ndarray, cider_b: np.ndarray,
                     samples: int = 1000, seed: int = 0) -> dict:
    """B minus A in corpus BLEU-4 and mean CIDEr-D over resampled test images.

    Returns each difference on the full set, its 95% percentile interval, and a two-sided p-value:
    twice the share of resamples where the difference has the other sign (capped at 1)."""
    n = len(cider_a)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    out = {}
    # summing statistics per resample: counts[k, i] = how often image i is drawn in resample k
    counts = np.zeros((samples, n))
    np.add.at(counts, (np.repeat(np.arange(samples), n), idx.ravel()), 1)
    sa, sb = counts @ bleu_a, counts @ bleu_b
    d_bleu = np.array([corpus_bleu(sb[k]) - corpus_bleu(sa[k]) for k in range(samples)])
    d_cider = (counts @ (cider_b - cider_a)) / n
    for name, full, dist in (("BLEU-4", corpus_bleu(bleu_b) - corpus_bleu(bleu_a), d_bleu),
                             ("CIDEr", float(np.mean(cider_b - cider_a)), d_cider)):
        lo, hi = np.percentile(dist, [2.5, 97.5])
        other_side = np.mean(dist <= 0) if full > 0 else np.mean(dist >= 0)
        out[name] = {"diff": float(full), "ci": (float(lo), float(hi)), "p": float(min(1.0, 2 * other_side))}
    return out
