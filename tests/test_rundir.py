"""The run folder's owner (benchmarks/store/rundir.py): atomic writes, what replaces what, stale runs, the lock."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.store import rundir, study_folder
from shared_data.errors import UserError


def minimal_metrics() -> dict:
    """The least a metrics.json holds that the report can table (METRICS_SCHEMA in benchmarks/store/schemas.py)."""
    scores = {"BLEU-4": 0.2, "CIDEr": 0.5}
    return {"status": "ok", "plugin": "torch_merge", "framework": "torch", "device": "cpu", "versions": {},
            "quality": scores, "shuffled_control": scores, "beam": scores,
            "params": {"total": 1, "trainable": 1, "components": {}}, "weights_bytes": 1,
            "speed": {k: 1.0 for k in ("train_tokens_per_s", "train_captions_per_s", "time_to_first_step_s",
                                       "decode_greedy_captions_per_s", "decode_beam_captions_per_s",
                                       "peak_memory_mb")} | {"peak_memory_kind": "rss", "fixed_shapes": False},
            "training": {"epochs": 1, "train_time_s": 1.0}, "overfitting": {"best_epoch": 1}}


def fake_run(d: Path, digest: str, finished: bool = True, label: str = "a", seed: int = 0) -> Path:
    """A run folder as the worker leaves it (only the files rundir itself reads)."""
    d.mkdir(parents=True, exist_ok=True)
    rundir.write_json(d / rundir.CONFIG, {"label": label, "plugin": "torch_merge", "hparams": {},
                                          "settings": {"seed": seed}, "dataset": "x", "extractor": "grid",
                                          "config_hash": digest})
    if finished:
        rundir.write_json(d / rundir.METRICS, minimal_metrics())
    return d


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    rundir.write_json(path, {"v": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match="No space left on device.*free some disk space"):
        rundir.write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_read_run_names_what_is_unreadable(tmp_path):
    d = fake_run(tmp_path / "r", "h1")
    assert rundir.read_run(d).finished
    (d / rundir.METRICS).write_text('{"status": "ok", "qual')
    assert rundir.read_run(d).state() == "unreadable: metrics.json is not valid JSON"
    (d / rundir.METRICS).write_text('{"status": "ok"}')
    assert rundir.read_run(d).state().startswith("unreadable: metrics.json has no 'plugin'")
    (d / rundir.CONFIG).write_text("[]")
    assert rundir.read_run(d).state() == "unreadable: config.json is not a JSON object"


def test_a_finished_run_is_only_replaced_by_a_finished_one(tmp_path):
    run = fake_run(tmp_path / "a-s0", "old")
    old = (run / rundir.METRICS).read_bytes()
    work = rundir.attempt_dir(run)
    assert work == tmp_path / "a-s0.next"  # beside the finished one, never in it
    rundir.begin_attempt(work, {"config_hash": "new", "label": "a"}, force=False)
    assert (run / rundir.METRICS).read_bytes() == old  # an attempt in flight (or failed) leaves it alone
    fake_run(work, "new")
    rundir.promote(work, run)
    assert rundir.read_run(run).config_hash == "new" and not work.exists()
    assert not (tmp_path / "a-s0.old").exists()
    unfinished = fake_run(tmp_path / "b-s0", "h", finished=False)
    assert rundir.attempt_dir(unfinished) == unfinished  # nothing finished there: train in place (and resume)


def test_recover_finishes_an_interrupted_promotion(tmp_path):
    run, work = tmp_path / "a-s0", tmp_path / "a-s0.next"
    fake_run(work, "new")
    fake_run(tmp_path / "a-s0.old", "old")  # killed between the two renames of promote()
    rundir.recover(run)
    assert rundir.read_run(run).config_hash == "new" and not work.exists()
    assert not (tmp_path / "a-s0.old").exists()


def test_stale_runs_are_listed_and_never_current(tmp_path):
    folder = study_folder.StudyFolder(tmp_path, "s")
    folder.create()
    fake_run(folder.path / "a-s0", "h0")  # current
    fake_run(folder.path / "a-s1", "h1", seed=1)  # a seed the last command did not ask for
    fake_run(folder.path / "b-s0", "old", label="b")  # b ran another configuration; its new attempt failed
    fake_run(folder.path / "b-s0.next", "h2", finished=False, label="b")
    rundir.write_text(folder.path / "b-s0.next" / rundir.ERROR, "error: boom\n")
    folder.write_plan([{"folder": "a-s0", "label": "a", "settings": {"seed": 0}, "config_hash": "h0"},
                       {"folder": "b-s0", "label": "b", "settings": {"seed": 0}, "config_hash": "h2"},
                       {"folder": "c-s0", "label": "c", "settings": {"seed": 0}, "config_hash": "h3"}])
    current, stale = folder.runs()
    assert [(r.dir.name, r.state()) for r in current] == [
        ("a-s0", "ok"), ("b-s0.next", "error: boom"), ("c-s0", "no metrics.json (unfinished)")]
    assert sorted(r.dir.name for r in stale) == ["a-s1", "b-s0"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", ".hidden", "", "-flag", "a\\b", "x" * 200])
def test_study_names_are_plain_folder_names(name, tmp_path):
    with pytest.raises(UserError, match="a study name is a plain folder name"):
        study_folder.StudyFolder(tmp_path, name)


def test_one_process_uses_a_study_folder_at_a_time(tmp_path):
    folder = study_folder.StudyFolder(tmp_path, "s")
    folder.create()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from benchmarks.store import study_folder; f = study_folder.StudyFolder(sys.argv[1], 's'); "
        "cm = f.lock(); cm.__enter__(); print('locked', flush=True); sys.stdin.read()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"study s is in use by PID {holder.pid}"), folder.lock():
            pass
    finally:
        holder.kill()  # kill -9 releases the lock with its file descriptor
        holder.wait()
    with folder.lock():
        assert (folder.path / rundir.LOCK).read_text() == str(os.getpid())


def test_a_failing_rerun_keeps_the_finished_result_and_a_report_never_mixes_configurations(
        small_dataset, data_dir, tmp_path):
    """The issue's cases: a finished study (2 seeds, 2 steps) rerun with one seed and a setting that fails
    in the worker keeps both finished runs and reports none of them as the new configuration; rerun with
    one that works, the new result replaces seed 0's and seed 1's old run stays listed as stale."""
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "benchmarks", "run", "--plugins", "torch_merge", "--dataset",
                               "synthetic-small", "--no-meteor", "--study", "re", "--data-dir", str(data_dir), *argv],
                              cwd=tmp_path, capture_output=True, text=True)

    study = tmp_path / "results" / "re"
    assert run("--steps", "2", "--seeds", "2").returncode == 0
    before = {s: (study / f"torch_merge-s{s}" / "metrics.json").read_bytes() for s in (0, 1)}
    failing = run("--steps", "3", "--lr", "1e30")  # diverges at step 2, before any epoch: a failed row
    assert failing.returncode == 1 and "the finished run of the earlier configuration is kept" in failing.stdout
    assert {s: (study / f"torch_merge-s{s}" / "metrics.json").read_bytes() for s in (0, 1)} == before
    report = (study / "report.md").read_text()
    assert "torch_merge: error: diverged" in report and "**Stale runs, not in any table**" in report
    assert "| torch_merge " not in report  # no row averages the stale runs in

    ok = run("--steps", "3")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    m = json.loads((study / "torch_merge-s0" / "metrics.json").read_text())
    assert m["training"]["steps"] == 3 and not (study / "torch_merge-s0.next").exists()
    report = (study / "report.md").read_text()
    assert "- budget: steps 3; seeds: 0" in report and "torch_merge-s1 (" in report  # seed 1: stale, listed
    assert "| torch_merge " in report and "(n=2)" not in report
