"""A report opens with its answer: one sentence per comparison (one seed, significant, inconclusive,
contradicted, the A/A row); results.csv and summary.json carry the report's own numbers; the forest
plot is drawn."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report.answer import answer, sentence
from benchmarks.scoring.comparisons import Comparison


def result(diff: float, half: float, p: float | None, mde: float = 0.01, seeds=(5, 5), var_seeds=1e-5,
         var_images=1e-6) -> dict:
    return {"diff": diff, "ci": (diff - half, diff + half), "p": p, "mde": None if p is None else mde,
            "seeds": seeds, "var_seeds": None if p is None else var_seeds, "var_images": var_images}


def comparison(label: str, verdict: str, bleu: dict, cider: dict, expect="higher", aa=False) -> Comparison:
    return Comparison(label, "base", "a hypothesis", expect, {"BLEU-4": bleu, "CIDEr": cider},
                      {"BLEU-4": bleu["p"], "CIDEr": cider["p"]}, verdict, aa)


def run(bleu: float, cider: float, minutes: float = 2.0) -> dict:
    return {"config": {"label": "x"}, "metrics": {"quality": {"BLEU-4": bleu, "CIDEr": cider},
                                                 "speed": {"started_at": 0.0, "finished_at": 60 * minutes}}}


GROUPS = {"base": [run(0.240, 0.70)], "x": [run(0.250, 0.74)]}


def test_one_seed_is_an_observation_with_the_command_that_would_test_it():
    c = comparison("x", "inconclusive (one seed: no between-seed inference)",
                   result(0.010, 0.004, None, seeds=(1, 1)), result(0.04, 0.02, None, seeds=(1, 1)))
    text = sentence(c, GROUPS)
    assert "BLEU-4 0.250 vs 0.240" in text and "CIDEr-D 0.740 vs 0.700" in text
    assert "not a conclusion" in text and "`--seeds 5`" in text and "about 2 minutes a run" in text


def test_a_significant_difference_says_which_way_how_much_and_how_sure():
    c = comparison("x", "supported", result(0.012, 0.005, 0.002), result(0.05, 0.02, 0.01))
    text = sentence(c, GROUPS)
    assert "**supported**: it scores higher" in text
    assert "Δ BLEU-4 +0.012 [+0.007, +0.017] (Holm p 0.002)" in text and "Δ CIDEr-D +0.050 [+0.030, +0.070]" in text
    assert "; 5 seeds each." in text
    c = comparison("x", "contradicted", result(-0.015, 0.005, 0.0004), result(-0.02, 0.03, 0.4))
    assert "**contradicted**: it scores lower" in sentence(c, GROUPS) and "Holm p < 0.001" in sentence(c, GROUPS)


def test_an_inconclusive_difference_says_what_would_settle_it():
    c = comparison("x", "inconclusive", result(0.004, 0.006, 0.2, mde=0.009), result(0.01, 0.03, 0.5, mde=0.04))
    text = sentence(c, GROUPS)
    assert "**inconclusive**" in text and "could detect effects of 0.009 BLEU-4 and 0.040 CIDEr-D" in text
    n = int(re.search(r"would need (\d+) seeds per configuration", text).group(1))
    from benchmarks.scoring.stats import seeds_needed

    assert n == min(seeds_needed(0.004, 1e-5 / 0.4, 1e-6), seeds_needed(0.01, 1e-5 / 0.4, 1e-6))
    assert f"about {2 * n * 2 / 60:.1f} hours" in text
    tiny = comparison("x", "inconclusive", result(0.0001, 0.006, 0.9, var_images=1e-4), result(0.0, 0.03, 1.0))
    assert "no number of seeds would resolve" in sentence(tiny, GROUPS)


def test_the_aa_row_and_the_summary_line():
    quiet = comparison("aa-control", "inconclusive", result(0.001, 0.006, 0.8), result(0.0, 0.03, 0.9), aa=True)
    assert "no detectable difference, as it should" in sentence(quiet, GROUPS)
    loud = comparison("aa-control", "higher", result(0.02, 0.006, 0.001), result(0.0, 0.03, 0.9), aa=True)
    assert "found a difference where there is none" in sentence(loud, GROUPS)
    rows = [comparison("x", "supported", result(0.012, 0.005, 0.002), result(0.05, 0.02, 0.01)),
            comparison("y", "inconclusive", result(0.004, 0.006, 0.2), result(0.01, 0.03, 0.5)), quiet]
    groups = {**GROUPS, "y": [run(0.244, 0.71)], "aa-control": [run(0.241, 0.70)]}
    lines = answer(groups, rows)
    assert lines[0] == "## The answer"
    assert "2 comparison(s) against base" in lines[2] and "1 supported, 1 inconclusive" in lines[2]
    assert sum(line.startswith("- **") for line in lines) == 3


@pytest.fixture(scope="module")
def ablation(small_dataset, data_dir, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("answer")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "ablate", "torch_merge", "--vary", "fusion=concat",
                           "--seeds", "3", "--steps", "3", "--no-meteor", "--dataset", "synthetic-small",
                           "--study", "a", "--data-dir", str(data_dir)], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd / "results" / "a"


def test_the_report_opens_with_its_answer_and_programs_get_its_numbers(ablation):
    report = (ablation / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", report, flags=re.M)
    assert sections[0] == "The answer" and sections[1].startswith("1. Quality")
    headline = report.split("## 1. Quality")[1].split("\n\n")[1].splitlines()[0]
    assert "METEOR" in headline and "BLEU-1" not in headline and "BLEU-1" in report.split("## 5.")[1]
    summary = json.loads((ablation / "summary.json").read_text())
    (c,) = summary["comparisons"]
    row = next(line for line in report.splitlines() if line.startswith(f"| {c['label']} − "))
    cells = [x.strip() for x in row.split("|")[1:-1]]
    m = c["metrics"]
    assert cells[1].rstrip(" *") == f"{m['BLEU-4']['diff']:+.3f}"
    assert cells[2] == f"[{m['BLEU-4']['ci'][0]:+.3f}, {m['BLEU-4']['ci'][1]:+.3f}]"
    assert cells[5].rstrip(" *") == f"{m['CIDEr']['diff']:+.3f}" and cells[9] == c["verdict"]
    assert c["seeds"] == [3, 3] and f"Δ BLEU-4 {m['BLEU-4']['diff']:+.3f}" in report.split("## 1.")[0]
    with open(ablation / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1", "2"}
    for r in rows:
        metrics = json.loads((ablation / r["folder"] / "metrics.json").read_text())
        assert float(r["bleu4"]) == pytest.approx(metrics["quality"]["BLEU-4"], rel=1e-5)
        assert r["engine"] == "torch.nn" and r["status"] == "ok" and r["cpu"]
    means = {x["label"]: x["means"]["bleu4"] for x in summary["configurations"]}
    assert means[c["base"]] == pytest.approx(sum(float(r["bleu4"]) for r in rows if r["label"] == c["base"]) / 3,
                                             rel=1e-5)
    forest = ablation / "forest.png"
    assert forest.stat().st_size > 0 and "![effects against the base (forest plot)](forest.png)" in report
