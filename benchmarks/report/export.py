"""What a program reads beside every report: results.csv (one row per finished run) and summary.json
(every comparison the report makes), written atomically by the run-folder module.

results.csv columns: folder, label, plugin, framework, engine (API@engine), seed, host, boot, cpu,
status, then every quality column (benchmarks/report/columns.py: QUALITY, by name) and the speed, size and
training columns (OTHER). Empty cells: the run's record has no such value.

summary.json: {"study", "alpha", "test", "base", "configurations": [{label, runs, means}],
"comparisons": [{label, base, hypothesis, expect, aa, verdict, seeds: [base, row], metrics:
{"BLEU-4"|"CIDEr": {diff, ci, p, p_holm, detectable, var_seeds, var_images}}}]}.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from backends.common import api_engine
from benchmarks.report.columns import OTHER, QUALITY, value
from benchmarks.scoring.comparisons import (
    METRIC_NAMES,
    Comparison,
    format_delta,
    format_detectable,
    format_p,
    label_of,
    seed_of,
)
from benchmarks.scoring.stats import ALPHA
from benchmarks.store import rundir

IDENTITY = ["folder", "label", "plugin", "framework", "engine", "seed", "host", "boot", "cpu", "status"]
TEST = ("seed-level: Welch t on seed-averaged corpus scores, standard error from between-seed and "
        "between-test-image variance, degrees of freedom the smaller side's seeds minus one; p Holm-adjusted "
        "across the comparisons, per metric")


def results_csv(done: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(IDENTITY + [c.name for c in QUALITY + OTHER])
    for r in done:
        m, env = r["metrics"], r["metrics"].get("environment") or {}
        try:
            engine = api_engine(m["framework"], m["versions"])
        except (KeyError, TypeError, AttributeError):
            engine = ""
        row = [r["dir"].name, label_of(r), r["config"].get("plugin"), m.get("framework"), engine, seed_of(r),
               env.get("host"), env.get("boot"), env.get("cpu"), m.get("status")]
        values = [value(c, m) for c in QUALITY + OTHER]
        w.writerow(row + ["" if v is None else f"{v:.6g}" for v in values])
    return out.getvalue()


def _number(x):
    return None if x is None or x != x else float(x)


def summary(study: str, groups: dict[str, list[dict]], comparisons: list[Comparison]) -> dict:
    configurations = []
    for label, group in groups.items():
        means = {}
        for c in QUALITY:
            values = [value(c, r["metrics"]) for r in group]
            means[c.name] = None if any(v is None for v in values) else sum(values) / len(values)
        configurations.append({"label": label, "runs": len(group), "seeds": sorted(seed_of(r) for r in group),
                               "means": means})
    return {
        "study": study, "alpha": ALPHA, "test": TEST, "base": next(iter(groups), None),
        "configurations": configurations,
        "comparisons": [{
            "label": c.label, "base": c.base, "hypothesis": c.note, "expect": c.expect, "aa": c.aa,
            "verdict": c.verdict, "seeds": list(c.seeds),
            "metrics": {m: {"diff": c.tests[m]["diff"], "ci": list(c.tests[m]["ci"]), "p": _number(c.tests[m]["p"]),
                            "p_holm": _number(c.adjusted[m]), "detectable": _number(c.tests[m]["mde"]),
                            "var_seeds": _number(c.tests[m]["var_seeds"]), "var_images": c.tests[m]["var_images"]}
                        for m in METRIC_NAMES}} for c in comparisons],
    }


def write(study_dir: Path, done: list[dict], groups: dict[str, list[dict]], comparisons: list[Comparison]) -> None:
    rundir.write_text(study_dir / rundir.RESULTS, results_csv(done))
    rundir.write_json(study_dir / rundir.SUMMARY, summary(Path(study_dir).name, groups, comparisons))


def verdict_table(summary_json: dict) -> list[str]:
    """summary.json's comparisons as the markdown verdict table the README quotes (and a test compares)."""
    lines = ["| row (hypothesis) | Δ BLEU-4 [95%] | Holm p | Δ CIDEr-D [95%] | Holm p | verdict | detectable "
             "(BLEU-4 / CIDEr-D) |", "|---|---|---|---|---|---|---|"]
    for c in summary_json["comparisons"]:
        b, d = c["metrics"]["BLEU-4"], c["metrics"]["CIDEr"]
        detectable = format_detectable(c["metrics"][m]["detectable"] for m in METRIC_NAMES)
        lines.append(f"| {c['label']}: {c['hypothesis'] or ''} | {format_delta(b)} | {format_p(b['p_holm'])} | "
                     f"{format_delta(d)} | {format_p(d['p_holm'])} | {c['verdict']} | {detectable} |")
    return lines
