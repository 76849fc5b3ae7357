"""`python -m benchmarks run` end to end on the small dataset: both frameworks, a report, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*argv, data_dir, cwd):
    return subprocess.run([sys.executable, "-m", "benchmarks", *map(str, argv), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def study(small_dataset, data_dir, tmp_path_factory):
    """keras_merge and torch_concat for 12 steps, plus one run that fails inside its worker."""
    cwd = tmp_path_factory.mktemp("study")
    proc = run("run", "--plugins", "keras_merge,torch_concat,torch_merge", "--dataset", "synthetic-small",
               "--steps", "12", "--no-meteor", "--set", "torch_merge.fusion=\"mul\"", "--study", "s",
               data_dir=data_dir, cwd=cwd)
    return proc, cwd / "results" / "s"


def test_study_writes_runs_and_report(study):
    proc, study_dir = study
    assert proc.returncode == 1, proc.stderr  # one run failed: the exit code says so
    assert "report:" in proc.stdout
    for name in ("keras_merge", "torch_concat"):
        run_dir = study_dir / f"{name}-s0"
        m = json.loads((run_dir / "metrics.json").read_text())
        assert m["status"] == "ok" and m["training"]["steps"] == 12
        assert 0 <= m["quality"]["BLEU-4"] <= 1 and m["params"]["total"] > 0
        for f in ("config.json", "history.csv", "captions.json", "stdout.log"):
            assert (run_dir / f).exists()
        assert any(run_dir.glob("weights.*"))
    report = (study_dir / "report.md").read_text()
    for section in ("## 1. Quality", "## 2. Size", "## 3. Speed", "## 4. Overfitting"):
        assert section in report
    assert "keras_merge" in report and "torch_concat" in report and "human ceiling" in report
    assert (study_dir / "curves.png").stat().st_size > 0


def test_failed_run_is_a_row_not_a_crash(study):
    proc, study_dir = study
    assert "FAILED" in proc.stdout and "bad merge hyperparameters" in proc.stdout
    assert not (study_dir / "torch_merge-s0" / "metrics.json").exists()
    assert "torch_merge: " in (study_dir / "report.md").read_text()


def test_report_rebuilds_from_saved_runs(study, data_dir):
    _, study_dir = study
    (study_dir / "report.md").unlink()
    proc = run("report", study_dir, data_dir=data_dir, cwd=study_dir.parent)
    # report takes no --data-dir: the runs' configs say where the dataset is
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "report", str(study_dir)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "## 4. Overfitting" in (study_dir / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--plugins", "torch_concatt"], "unknown plugin 'torch_concatt' (did you mean torch_concat?)"),
    (["--plugins", "torch_merge", "--set", "torch_merge.dropuot=0.1"], "torch_merge has no hyperparameter dropuot"),
    (["--plugins", "torch_merge", "--set", "keras_merge.dropout=0.1"], "keras_merge is not among --plugins"),
    (["--plugins", "torch_merge", "--epochs", "0"], "--epochs must be positive"),
    (["--plugins", "torch_merge", "--dataset", "flickr8k"], "no prepared dataset at"),
    (["--plugins", "torch_merge", "--dataset", "synthetic-small", "--extractor", "resnet101"],
     "has no 'resnet101' features"),
])
def test_bad_run_input_is_one_line(small_dataset, data_dir, tmp_path, argv, message):
    proc = run("run", *argv, data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
