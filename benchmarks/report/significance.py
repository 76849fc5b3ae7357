"""Whether differences are real: differences over seeds, the seed-level tests with Holm's
adjustment, the A/A calibration (`calibrate`), paired against unpaired power, and variance components."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tabulate import tabulate

from benchmarks.report.columns import fmt
from benchmarks.report.runs import study_runs
from benchmarks.scoring.comparisons import (
    AA_LABEL,
    EFFECTS,
    METRIC_NAMES,
    format_ci,
    format_detectable,
    format_p,
    groups_of,
    per_run,
    seed_of,
)
from benchmarks.scoring.stats import mean_ci
from shared_data.errors import UserError


def _difference_over_seeds(a: list[dict], b: list[dict], get, relative: bool = False) -> str:
    """Runs of the same seed paired (mean ± t-interval of the differences); configurations with
    disjoint seeds (an A/A row) compared unpaired (difference of means, Welch interval)."""
    by_seed = {seed_of(r): get(r["metrics"]) for r in a}
    pairs = [(by_seed[seed_of(r)], get(r["metrics"])) for r in b if by_seed.get(seed_of(r)) is not None]
    pairs = [(x, y) for x, y in pairs if y is not None]

    def scale(x, y):
        return 100 * (y - x) / x if relative else y - x

    digits, unit = (1, "%") if relative else (3, "")
    if pairs:
        mean, half = mean_ci([scale(x, y) for x, y in pairs])
    else:
        xa = [v for v in (get(r["metrics"]) for r in a) if v is not None]
        xb = [v for v in (get(r["metrics"]) for r in b) if v is not None]
        if not xa or not xb:
            return "n/a"
        ma = float(np.mean(xa))
        mean = scale(ma, float(np.mean(xb)))
        half = math.nan
        if len(xa) > 1 and len(xb) > 1:
            from benchmarks.scoring.stats import t_critical

            va, vb = np.var(xa, ddof=1) / len(xa), np.var(xb, ddof=1) / len(xb)
            df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1)) if va + vb > 0 else math.inf
            half = t_critical(df) * math.sqrt(va + vb) * (100 / ma if relative else 1)
    return f"{mean:+.{digits}f}{unit}" + ("" if half != half else f" ± {half:.{digits}f}{unit}")


def significance_section(groups: dict[str, list[dict]], comparisons: list, samples: int = 1000) -> list[str]:
    """Each configuration against the first: seed-level tests (stats.seed_level_test) with
    Holm-adjusted p-values across the rows, a verdict per hypothesis, the smallest effect each row
    could detect, the variance components and the seeds a given effect would need."""
    from benchmarks.scoring.stats import ALPHA, POWER, seeds_needed

    if not comparisons:
        return []
    base = comparisons[0].base
    tests = {c.label: c.tests for c in comparisons}
    single = any(c.single for c in comparisons)
    rows = []
    for c in comparisons:
        row = [f"{c.label} − {base}" + (f" ({c.note})" if c.note else "")]
        for m in METRIC_NAMES:
            d, adj = c.tests[m], c.adjusted[m]
            mark = " *" if adj is not None and adj < ALPHA else ""
            row += [f"{d['diff']:+.3f}{mark}", format_ci(d["ci"]), format_p(d["p"]), format_p(adj)]
        row += [c.verdict, format_detectable(c.tests[m]["mde"] for m in METRIC_NAMES),
                _difference_over_seeds(groups[base], groups[c.label], lambda m: m["overfitting"]["final_val_loss"]),
                _difference_over_seeds(groups[base], groups[c.label], lambda m: m["speed"]["train_tokens_per_s"],
                                       relative=True)]
        rows.append(row)
    n_seeds = sorted({n for t in tests.values() for n in t["BLEU-4"]["seeds"]})
    lines = [f"### Differences against {base} (seed-level: between seeds and between test images)", ""]
    if single:
        lines += ["**One seed per configuration on at least one side: no between-seed inference is possible.** "
                  "Those rows' intervals cover test-image sampling only (they say whether these trained models "
                  "differ on other images, not whether the configuration trains better models); they get no p, "
                  "no star and no verdict. Run with --seeds 3 or more.", ""]
    lines += [tabulate(rows, headers=["comparison", "Δ BLEU-4", "95% interval", "p", "p (Holm)", "Δ CIDEr-D",
                                      "95% interval", "p", "p (Holm)", "verdict",
                                      f"detectable at {POWER:.0%} power (BLEU-4 / CIDEr-D)", "Δ final val loss",
                                      "Δ train tokens/s"], tablefmt="github", disable_numparse=True), "",
              f"Δ: the difference of seed-averaged corpus scores (seeds per configuration: "
              f"{', '.join(map(str, n_seeds))}). Its standard error adds the between-seed variance (of per-seed "
              f"corpus scores, within each configuration) and the between-image variance (a paired bootstrap of "
              f"the seed-averaged difference over the same test images, {samples} resamples); interval and p from "
              f"a Welch t with the smaller side's seeds minus one as degrees of freedom (Hsu's conservative "
              f"choice), unpaired even where both sides ran the same seeds: on the seed 000 reference, pairing by "
              f"seed gave no narrower intervals and no lower false-positive rate (`calibrate`; docs/statistics.md). "
              f"p (Holm): adjusted across this table's rows, "
              f"per metric; * marks p (Holm) < {ALPHA}. Verdict: supported when an adjusted-significant effect "
              f"goes the way the hypothesis expects (and none the other way), contradicted when one goes against "
              f"it, inconclusive otherwise. Detectable: the smallest true effect this row would find with "
              f"{POWER:.0%} power at its seeds. Val loss and throughput: differences between runs of the same "
              f"seed, mean ± 95% t-interval (throughput in percent); unpaired where the seeds differ.", ""]
    lines += _variance_components(groups, tests, base, seeds_needed)
    return lines


def aa_calibration(study_dir: Path, label: str | None, group: int, splits: int) -> str:
    """`calibrate`: the A/A false-positive rate of the report's test, unpaired and paired by seed, on one
    configuration's saved runs (the base with its A/A row: the same configuration on other seeds); then,
    on the study's comparisons whose sides ran the same seeds, how the paired test's power compares."""
    from benchmarks.scoring.stats import ALPHA, aa_false_positive_rate

    if not Path(study_dir).is_dir():
        raise UserError(f"{study_dir} is not a study folder; studies live in results/<study>")
    done, _, _ = study_runs(Path(study_dir))
    groups = groups_of(done)
    if not groups:
        raise UserError(f"{study_dir} has no finished runs")
    label = label or next(iter(groups))
    if label not in groups:
        raise UserError(f"--label {label}: not in {study_dir}; its configurations are {', '.join(groups)}")
    runs = groups[label] + (groups.get(AA_LABEL, []) if label == next(iter(groups)) else [])
    if group < 2 or len(runs) < 2 * group or splits < 1:
        raise UserError(f"--group {group}: {label} has {len(runs)} finished seeds; A/A splits need at "
                        f"least 2 x --group of them, --group at least 2 and --splits at least 1")
    _, scores = per_run(runs)
    also = f" (with its {AA_LABEL} row)" if len(runs) > len(groups[label]) else ""
    lines = [f"A/A splits of {label}{also}: {len(runs)} seeds, {group} vs {group}, {splits} random disjoint "
             f"splits, seed-level test at α {ALPHA}:"]
    for m, name in METRIC_NAMES.items():
        for paired in (False, True):
            r = aa_false_positive_rate(m, scores[m], group, splits, paired=paired)
            lines.append(f"  {name}, {'paired by seed' if paired else 'unpaired'}: false-positive rate "
                         f"{r['rate']:.3f} ({r['rejections']} of {r['splits']})")
    return "\n".join(lines + _paired_power(groups))


def _paired_power(groups: dict[str, list[dict]]) -> list[str]:
    """On the comparisons whose two sides ran the same seeds: how many each test finds at α, and the
    paired interval's width against the unpaired one (below 1: the paired test is sharper)."""
    from benchmarks.scoring.stats import ALPHA, paired_seed_level_test, seed_level_test

    labels = list(groups)
    base = labels[0]
    base_seeds = sorted(seed_of(r) for r in groups[base])
    _, a = per_run(groups[base])
    lines = []
    for m, name in METRIC_NAMES.items():
        found, ratios, n = {"unpaired": 0, "paired": 0}, [], 0
        for label in labels[1:]:
            if sorted(seed_of(r) for r in groups[label]) != base_seeds or len(base_seeds) < 2:
                continue
            _, b = per_run(groups[label])
            u, p = seed_level_test(m, a[m], b[m]), paired_seed_level_test(m, a[m], b[m])
            found["unpaired"] += u["p"] < ALPHA
            found["paired"] += p["p"] < ALPHA
            ratios.append((p["ci"][1] - p["ci"][0]) / (u["ci"][1] - u["ci"][0]))
            n += 1
        if n:
            lines.append(f"  {name}, {n} comparisons on the same seeds: unpaired finds {found['unpaired']}, paired "
                         f"{found['paired']} at α {ALPHA} (unadjusted); paired interval width / unpaired: median "
                         f"{float(np.median(ratios)):.2f}")
    return (["Power on the study's comparisons:"] + lines) if lines else []


def _variance_components(groups: dict, tests: dict, base: str, seeds_needed) -> list[str]:
    """Per comparison and metric, the standard error of Δ from each source, so that a reader sees
    which dominates; and the seeds a given effect needs at the base's measured variances."""
    from benchmarks.scoring.stats import run_scores

    def se(v):
        return "n/a" if v is None else fmt(math.sqrt(v))

    rows = [[f"{label} − {base}"] + [x for m in METRIC_NAMES for x in (se(t[m]["var_seeds"]), se(t[m]["var_images"]))]
            for label, t in tests.items()]
    lines = ["Where the uncertainty comes from: the standard error of each Δ from differences between training "
             "seeds and from the choice of test images.", "",
             tabulate(rows, headers=["comparison", "BLEU-4 SE: seeds", "BLEU-4 SE: images", "CIDEr-D SE: seeds",
                                     "CIDEr-D SE: images"], tablefmt="github", disable_numparse=True), ""]
    _, base_scores = per_run(groups[base])
    needed = []
    for m, effect in EFFECTS.items():
        per_seed = run_scores(m, base_scores[m])
        if len(per_seed) < 2:
            continue
        v_images = float(np.median([t[m]["var_images"] for t in tests.values()]))
        n = seeds_needed(effect, float(np.var(per_seed, ddof=1)), v_images)
        needed.append(f"{effect} {METRIC_NAMES[m]}: " + (f"{n} seeds per configuration" if n else
                                                           "not reachable on this test set (its image variance "
                                                           "alone exceeds it)"))
    if needed:
        lines += [f"Seeds needed to detect an effect (two-sided α 0.05, 80% power, {base}'s between-seed variance, "
                  "the median image variance of the rows above): " + "; ".join(needed) + ".", ""]
    return lines
