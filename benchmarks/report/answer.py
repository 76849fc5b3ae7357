"""The answer a report opens with: one sentence per comparison, in words, before any table.

Each sentence says which configuration scores higher and by how much (Δ BLEU-4 and Δ CIDEr-D with
their seed-level 95% intervals), how sure (Holm-adjusted p, the verdict), and, when the study cannot
tell, what would: the seeds the observed difference needs at the measured variances, and how long
a run took. With one seed a sentence reports what was observed and says it is not a conclusion.
"""

from __future__ import annotations

import math

from benchmarks.scoring.comparisons import METRIC_NAMES, Comparison, format_delta, format_p
from benchmarks.scoring.stats import ALPHA, seeds_needed

SIGNIFICANT = ("supported", "contradicted", "mixed", "higher", "lower")


def _delta(c: Comparison, m: str) -> str:
    return f"Δ {METRIC_NAMES[m]} {format_delta(c.tests[m])}"


def _deltas(c: Comparison) -> str:
    return ", ".join(f"{_delta(c, m)} (Holm p {format_p(c.adjusted[m])})" for m in METRIC_NAMES)


def minutes_per_run(group: list[dict]) -> float | None:
    """Mean wall-clock minutes of a configuration's runs (training and evaluation), as recorded."""
    walls = [r["metrics"]["speed"].get("finished_at", math.nan) - r["metrics"]["speed"].get("started_at", math.nan)
             for r in group]
    walls = [w for w in walls if w == w and w > 0]
    return sum(walls) / len(walls) / 60 if walls else None


def _mean_quality(group: list[dict]) -> dict[str, float]:
    return {m: sum(r["metrics"]["quality"][m] for r in group) / len(group) for m in METRIC_NAMES}


def _seeds_to_settle(c: Comparison) -> int | None:
    """Seeds per configuration at which the observed difference would be detected (80% power) on the
    metric that gets there first; None when no number of seeds can on this test set."""
    best = None
    for m in METRIC_NAMES:
        t = c.tests[m]
        na, nb = t["seeds"]
        if t["var_seeds"] is None or not t["diff"]:
            continue
        per_config = t["var_seeds"] / (1 / na + 1 / nb)  # one configuration's between-seed variance
        n = seeds_needed(t["diff"], per_config, t["var_images"])
        if n is not None and (best is None or n < best):
            best = n
    return best


def sentence(c: Comparison, groups: dict[str, list[dict]]) -> str:
    """One comparison in words."""
    who = f"**{c.label}** against {c.base}" + (f" ({c.note})" if c.note else "")
    na, nb = c.seeds
    if c.single:
        b, v = _mean_quality(groups[c.base]), _mean_quality(groups[c.label])
        minutes = minutes_per_run(groups[c.base] + groups[c.label])
        cost = f", about {minutes:.0f} minutes a run on this machine" if minutes else ""
        return (f"{who}: BLEU-4 {v['BLEU-4']:.3f} vs {b['BLEU-4']:.3f}, CIDEr-D {v['CIDEr']:.3f} vs {b['CIDEr']:.3f} "
                f"({_delta(c, 'BLEU-4')}, {_delta(c, 'CIDEr')}, intervals over test images only). One seed "
                f"each is an observation, not a conclusion: a retraining moves these scores too. Run the same "
                f"command with `--seeds 5` to test it{cost}.")
    seeds = f"{na} seeds each" if na == nb else f"{na} and {nb} seeds"
    if c.aa:
        fired = any(p is not None and p < ALPHA for p in c.adjusted.values())
        return (f"{who}: the A/A control, the base again on other seeds: {_deltas(c)}; "
                + ("**the test found a difference where there is none**: read the other verdicts with that "
                   "false positive in mind." if fired else f"no detectable difference, as it should; {seeds}."))
    if c.verdict in SIGNIFICANT:
        up = c.tests["BLEU-4"]["diff"] > 0 if c.adjusted["BLEU-4"] is not None and c.adjusted["BLEU-4"] < ALPHA \
            else c.tests["CIDEr"]["diff"] > 0
        return f"{who}: **{c.verdict}**: it scores {'higher' if up else 'lower'}, {_deltas(c)}; {seeds}."
    mde = " and ".join(f"{c.tests[m]['mde']:.3f} {METRIC_NAMES[m]}" for m in METRIC_NAMES)
    n = _seeds_to_settle(c)
    minutes = minutes_per_run(groups[c.base] + groups[c.label])
    if n is None:
        settle = "no number of seeds would resolve a difference this small on this test set"
    else:
        cost = f" (about {2 * n * minutes / 60:.1f} hours of this machine for the two rows)" if minutes else ""
        settle = f"the observed difference would need {n} seeds per configuration to be detected{cost}"
    return (f"{who}: **{c.verdict}**: {_deltas(c)}; {seeds}; this study could detect effects of {mde}, and "
            f"{settle}.")


def answer(groups: dict[str, list[dict]], comparisons: list[Comparison]) -> list[str]:
    """The report's first section."""
    lines = ["## The answer", ""]
    if not comparisons:
        for label, group in groups.items():
            mean = _mean_quality(group)
            lines.append(f"- **{label}** scored BLEU-4 {mean['BLEU-4']:.3f} and CIDEr-D {mean['CIDEr']:.3f}"
                         + (f" (mean of {len(group)} seeds)" if len(group) > 1 else " (one seed)")
                         + "; with nothing to compare it with, there is no verdict.")
        return lines + [""]
    rows = [c for c in comparisons if not c.aa]
    if rows and not any(c.single for c in rows):
        counts: dict[str, int] = {}
        for c in rows:
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
        lines += [f"{len(rows)} comparison(s) against {rows[0].base}, each tested at the seed level and "
                  f"Holm-adjusted across the rows (α {ALPHA}): "
                  + ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])) + ".", ""]
    lines += [f"- {sentence(c, groups)}" for c in comparisons]
    return lines + ["", "Δ: the row minus the base, seed-averaged corpus scores on the test split, with 95% intervals "
                    "that include between-seed variance (section 1 gives the method).", ""]

