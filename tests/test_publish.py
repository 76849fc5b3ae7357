"""`publish`: a study's finished runs copied (no weights) into a reference folder that report,
calibrate and study (resuming) use as they use the study itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report.publish import publish
from benchmarks.store import rundir

ARGS = ["--plugins", "torch_merge", "--dataset", "synthetic-small", "--steps", "2", "--no-meteor"]


def study(cwd: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", *ARGS, "--study", "s", "--data-dir",
                           str(data_dir), *extra], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def source(small_dataset, data_dir, tmp_path_factory) -> Path:
    """torch_merge, 4 seeds (enough for calibrate --group 2), 2 steps each."""
    cwd = tmp_path_factory.mktemp("publish")
    proc = study(cwd, data_dir, "--seeds", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd / "results" / "s"


def tables(report: Path) -> str:
    """The report without its header (date, commit): the answer and tables a publication must reproduce."""
    text = report.read_text()
    return text[text.index("## The answer"):]


def test_publish_copies_what_reports_need_and_never_weights(source, tmp_path):
    target = publish(source, tmp_path / "reference" / "s", log=lambda *_: None)
    runs = sorted(p.name for p in target.iterdir() if p.is_dir())
    assert runs == [f"torch_merge-s{k}" for k in range(4)]
    for name in runs:
        files = {p.name for p in (target / name).iterdir()}
        assert files == set(rundir.PUBLISHED_RUN_FILES)  # no weights, checkpoint, tensorboard or lock
        assert (target / name / "metrics.json").read_bytes() == (source / name / "metrics.json").read_bytes()
        captions = json.loads((target / name / "captions.json").read_text())
        assert all(set(c) == {"generated"} for c in captions.values())  # references once, in references.json
    assert not list(target.rglob("weights*")) and not list(target.rglob("*.lock"))
    references = json.loads((target / rundir.REFERENCES).read_text())
    full = rundir.read_captions(source / runs[0])
    assert references == {i: c["references"] for i, c in full.items()}
    assert rundir.read_captions(target / runs[0]) == full
    record = json.loads((target / rundir.PUBLISHED).read_text())
    assert record["study"] == "s" and record["runs"] == record["planned"] == 4
    assert tables(target / "report.md") == tables(source / "report.md")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert size < 2 * sum(p.stat().st_size for p in source.rglob("*") if p.is_file() and "weights" not in p.name)


def test_report_and_calibrate_work_on_a_publication_in_a_fresh_clone(source, tmp_path, capsys):
    """A clone has the publication but neither the working folder nor the dataset at the study's path."""
    from benchmarks.cli import main

    target = publish(source, tmp_path / "published", log=lambda *_: None)
    clone = tmp_path / "clone" / "s"
    shutil.copytree(target, clone)
    for p in clone.glob("*.png"):
        p.unlink()
    assert main(["report", str(clone)]) == 0
    assert tables(clone / "report.md") == tables(source / "report.md")
    capsys.readouterr()
    assert main(["calibrate", str(clone), "--group", "2", "--splits", "20"]) == 0
    here = capsys.readouterr().out
    assert main(["calibrate", str(source), "--group", "2", "--splits", "20"]) == 0
    assert capsys.readouterr().out == here  # the same false-positive rates from the copy


def test_publish_grows_and_never_replaces(source, tmp_path):
    target = tmp_path / "grows"
    half = tmp_path / "half" / "s"
    shutil.copytree(source, half)
    for k in (2, 3):  # a sitting that finished two seeds of four
        (half / f"torch_merge-s{k}" / "metrics.json").unlink()
    lines = []
    publish(half, target, log=lines.append)
    assert "published 2 new run(s)" in lines[-1] and "2 of 4 planned not finished yet" in lines[-1]
    publish(source, target, log=lines.append)  # the next sitting finished the rest
    assert "published 2 new run(s)" in lines[-1] and "(2 published earlier)" in lines[-1]
    assert json.loads((target / rundir.PUBLISHED).read_text())["runs"] == 4
    before = (target / "torch_merge-s0" / "metrics.json").read_bytes()
    other = tmp_path / "other" / "s"
    shutil.copytree(source, other)
    config = json.loads((other / "torch_merge-s0" / "config.json").read_text())
    config["config_hash"] = "f" * 16
    (other / "torch_merge-s0" / "config.json").write_text(json.dumps(config))
    plan = json.loads((other / "study.json").read_text())
    plan["jobs"][0]["config_hash"] = "f" * 16
    (other / "study.json").write_text(json.dumps(plan))
    from shared_data.errors import UserError

    with pytest.raises(UserError, match="published runs are never replaced"):
        publish(other, target, log=lines.append)
    assert (target / "torch_merge-s0" / "metrics.json").read_bytes() == before


def test_a_study_resumes_from_its_publication(source, tmp_path, data_dir, monkeypatch):
    """On a fresh machine the same study command takes the published runs as finished (no training) and
    trains only what is missing."""
    from benchmarks.run.plan import StudyOptions, plugin_variants
    from benchmarks.run.study import run_study
    from benchmarks.settings import RunSettings
    from plugins.registry import PluginRef

    monkeypatch.setattr(rundir, "REFERENCE_DIR", tmp_path / "reference")
    half = tmp_path / "half" / "s"
    shutil.copytree(source, half)
    shutil.rmtree(half / "torch_merge-s3")
    publish(half, tmp_path / "reference" / "s", log=lambda *_: None)
    lines = []
    opts = StudyOptions(plugin_variants([PluginRef.parse("torch_merge")], {}),
                        RunSettings(steps=2, seeds=4, meteor=False), study="s", results_dir=tmp_path / "fresh",
                        dataset="synthetic-small", data_dir=data_dir)
    result = run_study(opts, log=lines.append)
    assert sum("taken from there" in line for line in lines) == 3 and sum("training" in line for line in lines) == 1
    assert [r["status"] for r in result.rows] == ["ok"] * 4
    fresh = tmp_path / "fresh" / "s"
    for k in range(4):  # the resumed study's runs are the original study's, to the byte
        assert (fresh / f"torch_merge-s{k}" / "metrics.json").exists()
    for k in range(3):
        assert rundir.read_captions(fresh / f"torch_merge-s{k}") == rundir.read_captions(source / f"torch_merge-s{k}")
    quality = [tables(d / "report.md").split("## 1. Quality")[1].split("## 2.")[0] for d in (fresh, source)]
    assert quality[0] == quality[1]


def test_the_readme_quotes_the_published_seed000_verdicts():
    """The README's verdict table is the published reference's summary.json, row for row, as `report`
    wrote it: a change of test or of runs that moves a number shows here until the README follows."""
    from benchmarks.report.export import verdict_table

    root = Path(__file__).resolve().parent.parent
    summary = json.loads((root / "results" / "reference" / "seed000" / rundir.SUMMARY).read_text())
    assert len(summary["comparisons"]) == 12 and all(c["seeds"] == [5, 5] for c in summary["comparisons"])
    readme = (root / "README.md").read_text().splitlines()
    table = verdict_table(summary)
    at = readme.index(table[0])
    assert readme[at:at + len(table)] == table
