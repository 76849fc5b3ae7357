"""A study's comparisons, computed once: every configuration against the first (the base) on the
headline metrics, with the seed-level test (benchmarks/scoring/stats.py), Holm's adjustment across the rows
and a verdict. The report's answer and differences table, summary.json and the forest plot all read
these, so they cannot disagree.

A run here is the report's row dict: {"config", "metrics", "captions", "per_image", ...}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AA_LABEL = "aa-control"  # the A/A row: the base configuration again on disjoint seeds (study --aa-control)

METRIC_NAMES = {"BLEU-4": "BLEU-4", "CIDEr": "CIDEr-D"}  # the tested metrics, as metrics.json and reports name them
EFFECTS = {"BLEU-4": 0.01, "CIDEr": 0.03}  # the effects the seeds-needed line is about


def format_p(p: float | None) -> str:
    """A p-value as every table and sentence prints it."""
    return "n/a" if p is None else f"{p:.3f}" if p >= 0.001 else "< 0.001"


def format_ci(ci) -> str:
    """A 95% interval of a difference as every table and sentence prints it."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def format_delta(test: dict) -> str:
    """A difference with its interval: "+0.004 [-0.017, +0.024]"."""
    return f"{test['diff']:+.3f} {format_ci(test['ci'])}"


def format_detectable(values) -> str:
    """The smallest detectable effects of one row, one per metric: "0.035 / 0.102"."""
    return " / ".join("n/a" if v is None else f"{v:.3f}" for v in values)


def seed_of(r: dict) -> int:
    return (r["config"].get("settings") or {}).get("seed", 0)


def label_of(r: dict) -> str:
    return r["config"].get("label") or r["config"]["plugin"]


def groups_of(done: list[dict]) -> dict[str, list[dict]]:
    """Runs of the same configuration (all but the seed), in the order the study listed them."""
    groups: dict[str, list[dict]] = {}
    for r in done:
        groups.setdefault(label_of(r), []).append(r)
    return groups


def per_run(group: list[dict]) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """Test images and, per metric, each run's per-image scores: BLEU statistics [images, 10] and
    CIDEr-D [images], runs in seed order."""
    from benchmarks.scoring.stats import bleu_stats

    ids = sorted(group[0]["captions"])
    out: dict[str, list[np.ndarray]] = {"BLEU-4": [], "CIDEr": []}
    for r in sorted(group, key=seed_of):
        caps, per = r["captions"], r["per_image"]
        if sorted(caps) != ids:
            raise KeyError("runs of one configuration decoded different test images")
        out["BLEU-4"].append(np.stack([bleu_stats(caps[i]["references"], caps[i]["generated"]) for i in ids]))
        out["CIDEr"].append(np.array([per[i]["CIDEr"] for i in ids]))
    return ids, out


@dataclass
class Comparison:
    """One configuration against the base."""

    label: str
    base: str
    note: str  # the row's hypothesis, if it has one
    expect: str | None  # the direction the hypothesis expects (stats.EXPECTATIONS), or None
    tests: dict[str, dict]  # metric -> stats.seed_level_test's result (diff, ci, p, mde, seeds, variances)
    adjusted: dict[str, float | None]  # metric -> Holm-adjusted p (None with one seed on a side)
    verdict: str
    aa: bool  # the A/A row: the base again on other seeds, which should not differ

    @property
    def seeds(self) -> tuple[int, int]:
        return self.tests["BLEU-4"]["seeds"]

    @property
    def single(self) -> bool:
        """One seed on a side: no between-seed inference, no p, no verdict."""
        return self.tests["BLEU-4"]["p"] is None


def compare(groups: dict[str, list[dict]], samples: int = 1000) -> list[Comparison]:
    """Each configuration against the first, on the same test images (others cannot be paired)."""
    from benchmarks.scoring.stats import holm, seed_level_test, verdict

    labels = list(groups)
    if len(labels) < 2:
        return []
    base = labels[0]
    ids_a, scores_a = per_run(groups[base])
    tests: dict[str, dict[str, dict]] = {}
    for label in labels[1:]:
        ids_b, scores_b = per_run(groups[label])
        if ids_b == ids_a:
            tests[label] = {m: seed_level_test(m, scores_a[m], scores_b[m], samples) for m in METRIC_NAMES}
    adjusted = {m: dict(zip(tests, holm([t[m]["p"] for t in tests.values()]), strict=True)) for m in METRIC_NAMES}
    out = []
    for label, t in tests.items():
        config = groups[label][0]["config"]
        adj = {m: adjusted[m][label] for m in METRIC_NAMES}
        out.append(Comparison(label, base, config.get("note") or "", config.get("expect"), t, adj,
                              verdict(config.get("expect"), t, adj), label == AA_LABEL))
    return out
