"""Statistics for studies: the training seed is the unit of evidence.

- Across seeds, a quality number is reported as mean +- the half-width of a 95% t-interval
  (n - 1 degrees of freedom): with 3 seeds that half-width is 2.48 standard deviations, which is
  what honest small-sample error bars look like.
- Corpus BLEU-4 is not a mean of per-image scores, so each image carries its BLEU sufficient
  statistics (clipped n-gram matches, n-gram counts, hypothesis length, closest reference length)
  and the BLEU-4 of any set of images is computed from their sums, the way pycocoevalcap computes
  the corpus score. CIDEr-D is a mean of per-image scores.
- Two configurations are compared by `seed_level_test`: the difference of their seed-averaged corpus
  scores, with a standard error of two parts, between seeds (the variance of per-seed corpus scores
  within each configuration, over its number of seeds) and between test images (a paired bootstrap
  of the seed-averaged difference over the same images, Koehn 2004), and a Welch t for the interval
  and the p-value with the smaller side's seeds minus one as its degrees of freedom. That choice
  (Hsu's) keeps the test's level at most ALPHA for normal per-seed scores whatever the two
  variances; Satterthwaite's degrees of freedom do not here: the image term, estimated from a
  thousand images, raised them to 4-9 with 2 seeds a side, and A/A splits of the seed 000 reference
  came out significant 9.0% of the time at 2 vs 2 and 5.6% at 5 vs 5 on BLEU-4 (against 0% and 1.8%
  with Hsu's; docs/statistics.md). The image term adds to the standard error, never to the degrees
  of freedom: each seed's score already carries its own test-set noise, so the term is a deliberate,
  conservative extra. The image bootstrap alone (`paired_bootstrap`) answers "would these trained
  models differ on other images?", not "does this configuration train better models?"; with 2-5
  seeds, resampling the seeds too (`hierarchical_bootstrap`) gives intervals that are too narrow,
  since a resample of n values varies (n-1)/n as much as new draws and percentile intervals of a few
  values are short: the t keeps its level (tests/test_stats.py measures both coverages).
- `holm` adjusts the p-values of a table's rows for multiple comparisons (Holm 1979).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05  # the level of every test and interval in a report
POWER = 0.80  # the power at which the smallest detectable effect is stated
EXPECTATIONS = ("higher", "lower")  # a hypothesis' direction: the variant scores higher or lower than the base


def _t():
    """Student's t distribution (scipy is imported when a report needs it, not at the CLI's start)."""
    from scipy.stats import t

    return t


def t_critical(df: float, level: float = 1 - ALPHA / 2) -> float:
    """Student's t quantile (two-sided 95% by default); NaN without degrees of freedom."""
    if not df >= 1:
        return math.nan
    return float(_t().ppf(level, df))


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


def corpus_bleu_many(stats: np.ndarray, max_n: int = 4) -> np.ndarray:
    """corpus_bleu over the last axis of summed statistics [..., 2*max_n+2], vectorised."""
    tiny, small = 1e-15, 1e-9
    log_p = sum(np.log((stats[..., n] + tiny) / (stats[..., max_n + n] + small)) for n in range(max_n)) / max_n
    ratio = (stats[..., 2 * max_n] + tiny) / (stats[..., 2 * max_n + 1] + small)
    bp = np.where(ratio >= 1, 1.0, np.exp(1 - 1 / np.minimum(ratio, 1)))
    return bp * np.exp(log_p)


def _resample_counts(n_images: int, samples: int, rng) -> np.ndarray:
    """counts[k, i]: how often image i is drawn in bootstrap resample k."""
    idx = rng.integers(0, n_images, size=(samples, n_images))
    counts = np.zeros((samples, n_images))
    np.add.at(counts, (np.repeat(np.arange(samples), n_images), idx.ravel()), 1)
    return counts


def run_scores(metric: str, per_image: list[np.ndarray], counts: np.ndarray | None = None) -> np.ndarray:
    """Each run's corpus score ([runs]), or on each image resample ([samples, runs]). per_image[r] is
    run r's BLEU statistics [images, 10] (metric "BLEU-4") or per-image CIDEr-D [images] ("CIDEr")."""
    if metric == "BLEU-4":
        if counts is None:
            return np.array([corpus_bleu(x) for x in per_image])
        return np.stack([corpus_bleu_many(counts @ x) for x in per_image], axis=1)
    if counts is None:
        return np.array([float(np.mean(x)) for x in per_image])
    return np.stack([counts @ x / counts.shape[1] for x in per_image], axis=1)


def seed_level_test(metric: str, a: list[np.ndarray], b: list[np.ndarray], samples: int = 1000,
                    seed: int = 0) -> dict:
    """B minus A with between-seed and between-image variance (see the module docstring).

    a, b: per-run per-image scores (run_scores' input), on the same images in the same order.
    Returns diff, ci, p (None with a single seed on either side: no between-seed inference), se, df,
    the two variance components of the difference, and the smallest effect detectable at POWER."""
    rng = np.random.default_rng(seed)
    sa, sb = run_scores(metric, a), run_scores(metric, b)
    diff = float(sb.mean() - sa.mean())
    counts = _resample_counts(len(a[0]), samples, rng)
    boot = run_scores(metric, b, counts).mean(1) - run_scores(metric, a, counts).mean(1)
    v_images = float(np.var(boot, ddof=1))
    out = {"diff": diff, "seeds": (len(a), len(b)), "var_images": v_images}
    if len(a) < 2 or len(b) < 2:
        lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        return out | {"ci": (float(lo), float(hi)), "p": None, "se": math.sqrt(v_images), "df": math.inf,
                      "var_seeds": None, "mde": None}
    v_seeds = float(np.var(sa, ddof=1)) / len(a) + float(np.var(sb, ddof=1)) / len(b)
    se = math.sqrt(v_seeds + v_images)
    df = min(len(a), len(b)) - 1  # Hsu's conservative choice: see the module docstring
    t = t_critical(df)
    p = float(2 * _t().sf(abs(diff) / se, df)) if se > 0 else (0.0 if diff else 1.0)
    return out | {"ci": (diff - t * se, diff + t * se), "p": p, "se": se, "df": df, "var_seeds": v_seeds,
                  "mde": (t + t_critical(df, POWER)) * se}


def paired_seed_level_test(metric: str, a: list[np.ndarray], b: list[np.ndarray], samples: int = 1000,
                           seed: int = 0) -> dict:
    """seed_level_test for configurations whose runs share their seeds (run k of each on the same
    batches, in the same order, from the same initial draws, on one machine): the between-seed part
    from the per-seed differences, n - 1 degrees of freedom. Where a seed moves both runs the same
    way, the differences vary less than either side and the test has more power; where it does not,
    it has fewer degrees of freedom. a[k] and b[k] must be the same seed."""
    if len(a) != len(b):
        raise ValueError(f"a paired test needs the same seeds on both sides, got {len(a)} and {len(b)} runs")
    rng = np.random.default_rng(seed)
    d = run_scores(metric, b) - run_scores(metric, a)
    counts = _resample_counts(len(a[0]), samples, rng)
    boot = run_scores(metric, b, counts).mean(1) - run_scores(metric, a, counts).mean(1)
    v_images = float(np.var(boot, ddof=1))
    out = {"diff": float(d.mean()), "seeds": (len(a), len(b)), "var_images": v_images}
    if len(d) < 2:
        lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        return out | {"ci": (float(lo), float(hi)), "p": None, "se": math.sqrt(v_images), "df": math.inf,
                      "var_seeds": None, "mde": None}
    v_seeds = float(np.var(d, ddof=1)) / len(d)
    se = math.sqrt(v_seeds + v_images)
    df = len(d) - 1  # from the seeds alone, as in seed_level_test
    t = t_critical(df)
    diff = out["diff"]
    p = float(2 * _t().sf(abs(diff) / se, df)) if se > 0 else (0.0 if diff else 1.0)
    return out | {"ci": (diff - t * se, diff + t * se), "p": p, "se": se, "df": df, "var_seeds": v_seeds,
                  "mde": (t + t_critical(df, POWER)) * se}


def seeds_needed(effect: float, var_seed: float, var_images: float, most: int = 1000) -> int | None:
    """Seeds per configuration for a two-sided test at ALPHA to detect `effect` with POWER, given the
    between-seed variance of one configuration's per-seed score and the image part of the difference
    (which more seeds do not shrink). None: not reachable on this test set, whatever the seeds."""
    for n in range(2, most + 1):
        df = n - 1  # seed_level_test's degrees of freedom at n seeds a side
        if (t_critical(df) + t_critical(df, POWER)) * math.sqrt(2 * var_seed / n + var_images) <= abs(effect):
            return n
    return None


def hierarchical_bootstrap(metric: str, a: list[np.ndarray], b: list[np.ndarray], samples: int = 1000,
                           seed: int = 0) -> dict:
    """B minus A resampling seeds within each configuration, then the test images (the same images for
    both): diff, percentile ci, p. Kept for comparison: see the module docstring for why reports use
    seed_level_test."""
    rng = np.random.default_rng(seed)
    counts = _resample_counts(len(a[0]), samples, rng)
    ra, rb = run_scores(metric, a, counts), run_scores(metric, b, counts)
    pick_a = rng.integers(0, len(a), size=(samples, len(a)))
    pick_b = rng.integers(0, len(b), size=(samples, len(b)))
    rows = np.arange(samples)[:, None]
    boot = rb[rows, pick_b].mean(1) - ra[rows, pick_a].mean(1)
    diff = float(run_scores(metric, b).mean() - run_scores(metric, a).mean())
    lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    other_side = np.mean(boot <= 0) if diff > 0 else np.mean(boot >= 0)
    return {"diff": diff, "ci": (float(lo), float(hi)), "p": float(min(1.0, 2 * other_side))}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the given order (None stays None and is not counted)."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def verdict(expect: str | None, tests: dict[str, dict], adjusted: dict[str, float | None]) -> str:
    """A hypothesis' verdict from its tests: 'supported' (a significant effect in the expected
    direction and none against it), 'contradicted' (the reverse), 'mixed', or 'inconclusive'.
    expect: "higher" or "lower" (the variant's score against the base); None (no hypothesis, as in
    `run`): 'higher' or 'lower' where an adjusted-significant effect says so, else 'no detectable
    difference'."""
    if all(t["p"] is None for t in tests.values()):
        return "inconclusive (one seed: no between-seed inference)"
    hits = {m: (adjusted[m] is not None and adjusted[m] < ALPHA) for m in tests}
    up = any(hits[m] and tests[m]["diff"] > 0 for m in tests)
    down = any(hits[m] and tests[m]["diff"] < 0 for m in tests)
    if expect not in EXPECTATIONS:
        return "mixed" if up and down else "higher" if up else "lower" if down else "no detectable difference"
    pro, con = (up, down) if expect == "higher" else (down, up)
    return "mixed" if pro and con else "supported" if pro else "contradicted" if con else "inconclusive"


def median_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(median, low, high, coverage) of a distribution-free interval for the median from order
    statistics (values may be inf: a run that never reached its target counts as slower than all).
    The interval is the widest pair of order statistics whose coverage is at least 95%, or all of
    them when there are too few values for 95% (coverage 1 - 2 / 2^n then)."""
    from math import comb

    x = np.sort(np.asarray(values, float))
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    med = float(np.median(x)) if not np.isinf(x[(n - 1) // 2:n // 2 + 1]).any() else math.inf
    k, coverage = 0, 1 - 2 * 0.5 ** n
    # k: number of values cut from each end; coverage = P(X_(k+1) <= median <= X_(n-k))
    for cut in range(1, n // 2):
        c = 1 - 2 * sum(comb(n, i) for i in range(cut + 1)) / 2 ** n
        if c < 1 - ALPHA:
            break
        k, coverage = cut, c
    return med, float(x[k]), float(x[n - 1 - k]), coverage


def aa_false_positive_rate(metric: str, runs: list[np.ndarray], group: int, splits: int = 500,
                           samples: int = 300, seed: int = 0, paired: bool = False) -> dict:
    """How often seed_level_test calls two disjoint groups of `group` seeds of ONE configuration
    different at ALPHA: A/A comparisons from real runs. runs: per-run per-image scores (run_scores'
    input), at least 2 * group of them; `splits` random disjoint pairs of groups (overlapping splits
    share runs, so the trials are not independent: the rate is an estimate, its interval optimistic)."""
    if len(runs) < 2 * group:
        raise ValueError(f"{len(runs)} runs cannot make two disjoint groups of {group}")
    rng = np.random.default_rng(seed)
    rejections = 0
    for k in range(splits):
        order = rng.permutation(len(runs))
        a, b = [runs[i] for i in order[:group]], [runs[i] for i in order[group:2 * group]]
        test = paired_seed_level_test if paired else seed_level_test  # paired: the k-th of each group paired
        p = test(metric, a, b, samples=samples, seed=k)["p"]
        rejections += p is not None and p < ALPHA
    rate = rejections / splits
    return {"rate": rate, "splits": splits, "rejections": rejections, "group": group, "runs": len(runs)}
