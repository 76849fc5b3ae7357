"""`python -m benchmarks run` end to end on the small dataset: both frameworks, a report, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


def run(*argv, data_dir, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks", *map(str, argv), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


@pytest.fixture(scope="module")
def study(small_dataset, data_dir, tmp_path_factory):
    """keras_merge and torch_concat for 12 steps, plus one run that fails inside its worker (a constraint
    between two hyperparameters, which only the model checks: d_model divisible by nhead)."""
    cwd = tmp_path_factory.mktemp("study")
    proc = run("run", "--plugins", "keras_merge,torch_concat,torch_transformer", "--dataset", "synthetic-small",
               "--steps", "12", "--no-meteor", "--set", "torch_transformer.d_model=12", "--study", "s",
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
    for section in ("## 1. Quality", "## 2. Size", "## 3. Speed", "## 4. Overfitting", "### Diversity",
                    "| human (first reference) "):
        assert section in report
    assert "keras_merge" in report and "torch_concat" in report and "human ceiling" in report
    speed = report.split("## 3. Speed")[1].split("## 4.")[0]  # each run's API and the engine under it
    assert re.search(r"\| keras_merge\S*\s*\| Keras@tensorflow", speed)
    assert re.search(r"\| torch_concat\S*\s*\| torch\.nn", speed)
    # Keras on TensorFlow's graph mode drops the trailing pads the harness added (backends.keras.train)
    for name in ("keras_merge", "torch_concat"):
        m = json.loads((study_dir / f"{name}-s0" / "metrics.json").read_text())
        assert m["speed"]["batch_width"] == "longest in batch", name
    assert "max length" not in speed
    from benchmarks.scoring.metrics import spice_missing

    assert ("SPICE left out" in report) == (spice_missing() is not None)
    assert (study_dir / "curves.png").stat().st_size > 0 and (study_dir / "samples.png").stat().st_size > 0


def test_failed_run_is_a_row_not_a_crash(study):
    proc, study_dir = study
    assert "FAILED" in proc.stdout and "bad transformer hyperparameters" in proc.stdout
    assert not (study_dir / "torch_transformer-s0" / "metrics.json").exists()
    assert "torch_transformer: " in (study_dir / "report.md").read_text()


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
    (["--plugins", "torch_merge", "--epochs", "0"], "--epochs 0: expected a whole number in [1, inf)"),
    (["--plugins", "torch_merge@jax"], "torch_merge@jax: '@backend' picks the Keras backend"),
    (["--plugins", "keras_merge@mxnet"], "unknown Keras backend 'mxnet'; use one of tensorflow, jax, torch"),
    (["--plugins", "torch_merge", "--dataset", "flickr8k"], "no prepared dataset at"),
    (["--plugins", "torch_merge", "--dataset", "synthetic-small", "--extractor", "resnet101"],
     "has no 'resnet101' features"),
])
def test_bad_run_input_is_one_line(small_dataset, data_dir, tmp_path, argv, message):
    proc = run("run", *argv, data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("lr", ["1e30", "1e308"])
def test_nan_loss_marks_the_run_diverged(small_dataset, data_dir, tmp_path, lr):
    """Adam moves every weight by ~lr per step whatever the gradient: lr 1e30 overflows the training loss
    at step 2; lr 1e308 can leave it finite and overflow the validation loss instead: both are diverged."""
    proc = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--steps", "2", "--lr", lr,
               "--no-meteor", "--study", "nan", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DIVERGED (error: diverged: non-finite loss at step 2" in proc.stdout
    report = (tmp_path / "results" / "nan" / "report.md").read_text()
    assert "torch_merge: error: diverged" in report


def test_prefix_training_runs_end_to_end(small_dataset, data_dir, tmp_path):
    proc = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--steps", "3",
               "--training", "prefix", "--beam-size", "5", "--no-meteor", "--study", "prefix", data_dir=data_dir,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((tmp_path / "results" / "prefix" / "torch_merge-s0" / "metrics.json").read_text())
    # whole images per step: 300 train images / 13 per batch (64 captions / 5 per image) = 24 steps
    assert m["training"]["steps"] == 3 and m["training"]["steps_per_epoch"] == 24
    assert m["beam"]["size"] == 5
    assert m["speed"]["batch_width"] == "longest in batch"  # torch cuts prefix batches to their longest prefix
    assert "prefix expansion" in (tmp_path / "results" / "prefix" / "report.md").read_text()


def test_decoding_is_an_ablation_axis(small_dataset, data_dir, tmp_path):
    """`--vary decoding=...`: each row's headline captions decoded its way; several captions per image
    give the report's mBLEU-4; the base's configuration (and hash) carries none of the new knobs."""
    proc = run("ablate", "torch_merge", "--vary", "decoding=beam,sample", "--captions-per-image", "3",
               "--beam-size", "3", "--temperature", "0.7", "--dataset", "synthetic-small", "--steps", "20",
               "--no-meteor", "--study", "dec", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "results" / "dec"
    runs = {p.name: p for p in folder.iterdir() if p.is_dir()}
    assert len(runs) == 3, sorted(runs)
    methods = {}
    for p in runs.values():
        cfg = json.loads((p / "config.json").read_text())
        m = json.loads((p / "metrics.json").read_text())
        methods[cfg["settings"].get("decoding", "greedy")] = (m, json.loads((p / "captions.json").read_text()))
    assert sorted(methods) == ["beam", "greedy", "sample"]
    greedy, beam, sample = methods["greedy"], methods["beam"], methods["sample"]
    assert greedy[0]["decoding"] == {"method": "greedy", "captions_per_image": 1}
    assert beam[0]["decoding"]["method"] == "beam 3 (length alpha 0.6)"
    assert sample[0]["decoding"]["method"].startswith("sample 3 (temperature 0.7")
    # plain beam search is what the beam column measures anyway
    assert beam[0]["quality"]["BLEU-4"] == pytest.approx(beam[0]["beam"]["BLEU-4"])
    assert all(len(c["all"]) == 3 and c["generated"] == c["all"][0] for c in sample[1].values())
    assert all("all" not in c for c in greedy[1].values())
    report = (folder / "report.md").read_text()
    assert "mBLEU-4" in report and "captions-per-image" in report


def _held(study: str, tmp_path, data_dir, hold: str = "torch_concat"):
    """A study of torch_merge then torch_concat whose second run waits after training (the worker's
    test hold) until signalled: the test, not the machine's speed, decides when the signal comes."""
    import re
    import signal
    import time

    # SIGINT at its default in the study: a suite started in the background (`pytest &`) hands its children
    # an ignored SIGINT, and Python then installs no KeyboardInterrupt handler, so ^C would never arrive
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", "--plugins", "torch_merge,torch_concat",
                             "--dataset", "synthetic-small", "--steps", "3", "--no-meteor", "--study", study,
                             "--jobs", "1", "--data-dir", str(data_dir)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CAPBENCH_TEST_HOLD": hold},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "results" / study / f"{hold}-s0" / "stdout.log"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        held = re.search(r"held for the test \(pid (\d+)\)", log.read_text()) if log.exists() else None
        if held:
            return proc, int(held[1])
        time.sleep(0.1)
    raise AssertionError(f"the held run never got there: {proc.communicate()}")


def test_ctrl_c_keeps_finished_runs_and_writes_their_report(small_dataset, data_dir, tmp_path):
    import signal

    proc, _ = _held("cc", tmp_path, data_dir)
    study_dir = tmp_path / "results" / "cc"
    # meanwhile the study folder is this process's: a second command into it is refused
    second_user = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--steps", "3",
                      "--study", "cc", data_dir=data_dir, cwd=tmp_path)
    assert second_user.returncode == 2 and f"study cc is in use by PID {proc.pid}" in second_user.stderr
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out and "Traceback" not in err and err.strip().count("\n") == 0
    first, second = study_dir / "torch_merge-s0", study_dir / "torch_concat-s0"
    assert (first / "metrics.json").exists() and not (second / "metrics.json").exists()
    report = (study_dir / "report.md").read_text()
    assert "torch_concat: no metrics.json (unfinished)" in report and "| torch_merge " in report


def test_sigterm_stops_like_ctrl_c_with_its_own_exit_code(small_dataset, data_dir, tmp_path):
    """What timeout, docker stop, Slurm and systemd send: the finished run kept, the report written, one
    line, exit 143."""
    import signal

    proc, _ = _held("term", tmp_path, data_dir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, out + err
    assert "interrupted" in out and "Traceback" not in err and err.strip().count("\n") == 0
    study_dir = tmp_path / "results" / "term"
    assert (study_dir / "torch_merge-s0" / "metrics.json").exists()
    assert not (study_dir / "torch_concat-s0" / "metrics.json").exists()
    assert "| torch_merge " in (study_dir / "report.md").read_text()


def test_worker_dies_with_its_study(small_dataset, data_dir, tmp_path):
    """kill -9 of the study process alone: its worker does not live on as an orphan."""
    import signal
    import time

    proc, worker = _held("orphan", tmp_path, data_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"worker {worker} outlived its study")


def test_missing_keras_backend_is_named(monkeypatch):
    """Where an engine's package is absent (jax and tensorflow come from the cpu/gpu extras), the plugin
    reference says which package to install, before any work starts."""
    import importlib.util

    from plugins.registry import PluginRef
    from shared_data.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(UserError, match=r"keras_merge@jax: the Keras backend 'jax' needs the jax package"):
        PluginRef.parse("keras_merge@jax")
    assert PluginRef.parse("keras_merge@torch").keras_backend == "torch"


def test_study_killed_with_sigkill_finishes_only_what_is_missing(small_dataset, data_dir, tmp_path):
    import signal
    import time

    argv = [sys.executable, "-m", "benchmarks", "run", "--plugins", "torch_merge,torch_concat", "--dataset",
            "synthetic-small", "--steps", "30", "--no-meteor", "--study", "k9", "--jobs", "1", "--data-dir",
            str(data_dir)]  # one at a time: the first run finishes before the second starts
    study_dir = tmp_path / "results" / "k9"
    first, second = study_dir / "torch_merge-s0", study_dir / "torch_concat-s0"
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not (second / "stdout.log").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its worker, no chance to clean up
    proc.wait()
    assert (first / "metrics.json").exists() and not (second / "metrics.json").exists()
    finished_at = (first / "metrics.json").stat().st_mtime

    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "torch_merge: finished earlier with the same configuration" in again.stdout
    assert (first / "metrics.json").stat().st_mtime == finished_at  # not redone
    assert json.loads((second / "metrics.json").read_text())["status"] == "ok"
    report = (study_dir / "report.md").read_text()
    assert "| torch_merge " in report and "| torch_concat " in report and "unfinished" not in report


def test_seeds_give_intervals_and_paired_differences(small_dataset, data_dir, tmp_path):
    proc = run("run", "--plugins", "torch_merge,torch_concat", "--dataset", "synthetic-small", "--steps", "12",
               "--seeds", "2", "--seed", "5", "--no-meteor", "--study", "seeds", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study_dir = tmp_path / "results" / "seeds"
    assert sorted(p.name for p in study_dir.iterdir() if p.is_dir()) == [
        "torch_concat-s5", "torch_concat-s6", "torch_merge-s5", "torch_merge-s6"]
    m5 = json.loads((study_dir / "torch_merge-s5" / "metrics.json").read_text())
    m6 = json.loads((study_dir / "torch_merge-s6" / "metrics.json").read_text())
    assert m5["quality"] != m6["quality"]  # the seeds are really different runs
    report = (study_dir / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| torch_merge (n=2)"))
    assert " ± " in row
    assert "### Differences against torch_merge (seed-level: between seeds and between test images)" in report
    assert "Where the uncertainty comes from" in report and "Seeds needed to detect an effect" in report
    assert "| torch_concat − torch_merge" in report
