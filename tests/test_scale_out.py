"""Scale-out and long runs: `--jobs N` side by side, `--executor ray`, per-epoch checkpoints, TensorBoard."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.test_run_cli import run

BASE = ("--dataset", "synthetic-small", "--no-meteor")


def history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "train_time_s"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def side_by_side(small_dataset, data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("jobs")
    proc = run("run", "--plugins", "torch_merge,torch_concat", *BASE, "--steps", "30", "--jobs", "2", "--tensorboard",
               "--study", "j", data_dir=data_dir, cwd=cwd)
    return proc, cwd / "results" / "j"


def test_jobs_run_side_by_side_with_pinned_threads(side_by_side):
    proc, study_dir = side_by_side
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = (json.loads((study_dir / f"{p}-s0" / "metrics.json").read_text())["speed"]
            for p in ("torch_merge", "torch_concat"))
    assert a["threads"] == b["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]  # they overlapped
    assert "Runs shared the machine" in (study_dir / "report.md").read_text()


def test_tensorboard_scalars_are_readable(side_by_side):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, study_dir = side_by_side
    events = EventAccumulator(str(study_dir / "torch_merge-s0" / "tensorboard"))
    events.Reload()
    tags = {"train/loss", "val/loss", "val/BLEU-4", "train/tokens_per_s", "test/BLEU-4"}
    assert tags <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 31))
    test_bleu4 = json.loads((study_dir / "torch_merge-s0" / "metrics.json").read_text())["quality"]["BLEU-4"]
    assert events.Scalars("test/BLEU-4")[0].value == pytest.approx(test_bleu4)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray)")
def test_ray_executor_lands_the_same_runs_in_the_results_folder(side_by_side, data_dir):
    """A local Ray instance, one CPU per task as with --jobs 2 here: the same files and the same numbers."""
    _, local_dir = side_by_side
    cwd = local_dir.parent.parent
    proc = run("run", "--plugins", "torch_merge,torch_concat", *BASE, "--steps", "30", "--executor", "ray",
               "--jobs", "2", "--study", "r", data_dir=data_dir, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "as a Ray task" in proc.stdout
    ray_dir = cwd / "results" / "r"
    for name in ("torch_merge-s0", "torch_concat-s0"):
        local_files = {p.name for p in (local_dir / name).iterdir()} - {"tensorboard"}
        assert {p.name for p in (ray_dir / name).iterdir()} == local_files
        assert history(ray_dir / name) == history(local_dir / name)
        data = json.loads((ray_dir / name / "metrics.json").read_text())["data"]
        assert data["path"] == str((data_dir / "synthetic-small").resolve())  # the study's path: it exists here
        assert data["features"] == "read from disk by batch"
    assert "| torch_concat " in (ray_dir / "report.md").read_text()


def test_a_node_finds_the_dataset_at_the_studys_path_or_in_its_own_data_dir(small_dataset, tmp_path, monkeypatch):
    """What a Ray node does with a run's config: the study's absolute path when the node has it (same path
    everywhere, or shared storage), else the same folder name in the node's own $CAPBENCH_DATA_DIR."""
    from benchmarks.run.worker.context import dataset_location
    from shared_data.dataset import load_dataset
    from shared_data.dataset_location import DATA_DIR_ENV

    cfg = {"dataset": "synthetic-small", "data_dir": None, "dataset_path": str(small_dataset)}
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert dataset_location(cfg) == (str(small_dataset), None)
    node_copy = tmp_path / "node"
    shutil.copytree(small_dataset, node_copy / "synthetic-small")
    monkeypatch.setenv(DATA_DIR_ENV, str(node_copy))
    elsewhere = {**cfg, "dataset_path": "/on/the/head/only/synthetic-small"}
    assert dataset_location(elsewhere) == (str(node_copy / "synthetic-small"), None)
    assert load_dataset(*dataset_location(elsewhere)).path == node_copy / "synthetic-small"
    # a node's copy must be the study's dataset: the dataset's identity travels in the run's config
    import json

    from benchmarks.run.worker.context import load_run_dataset
    from shared_data.dataset_format import dataset_identity
    from shared_data.errors import UserError

    checked = {**elsewhere,
               "dataset_identity": dataset_identity(json.loads((small_dataset / "manifest.json").read_text()))}
    assert load_run_dataset(checked).path == node_copy / "synthetic-small"
    manifest = node_copy / "synthetic-small" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name"', '"note": "another build",\n "name"', 1))
    with pytest.raises(UserError, match="is not the one the study used"):
        load_run_dataset(checked)
    monkeypatch.delenv(DATA_DIR_ENV)
    assert dataset_location(elsewhere)[0] == elsewhere["dataset_path"]  # its error names the prepare command


@pytest.mark.parametrize("plugin", ["torch_merge", "keras_merge"])
def test_killed_run_resumes_from_its_last_epoch(plugin, small_dataset, data_dir, tmp_path):
    """kill -9 during epoch 2 of 3, start again: the run goes on from its last checkpoint (model, Adam's
    moments, RNG state) and ends with exactly the history and scores of an uninterrupted run."""
    argv = ["run", "--plugins", plugin, *BASE, "--epochs", "3"]
    ref = run(*argv, "--study", "ref", data_dir=data_dir, cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    cmd = [sys.executable, "-m", "benchmarks", *argv, "--study", "ck", "--data-dir", str(data_dir)]
    run_dir = tmp_path / "results" / "ck" / f"{plugin}-s0"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        log = run_dir / "stdout.log"
        if log.exists() and '{"epoch": 1,' in log.read_text():
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "checkpoint.json").read_text())["loop"]["epoch"] >= 1

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from its last epoch checkpoint" in again.stdout
    assert "resumed from the checkpoint after epoch" in (run_dir / "stdout.log").read_text()
    assert not list(run_dir.glob("checkpoint.*"))  # finished: the checkpoint is gone
    ref_dir = tmp_path / "results" / "ref" / f"{plugin}-s0"
    assert history(run_dir) == history(ref_dir)
    m, r = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    assert m["quality"]["BLEU-4"] == r["quality"]["BLEU-4"] and m["quality"]["CIDEr"] == r["quality"]["CIDEr"]
    assert 1 <= m["training"]["resumed_after_epoch"] <= 2  # it trained on after resuming
    assert m["training"]["steps"] == r["training"]["steps"]
    assert {p.name for p in run_dir.glob("weights*")} == {p.name for p in ref_dir.glob("weights*")}


def test_force_starts_over_instead_of_resuming(small_dataset, data_dir, tmp_path):
    """A checkpoint of this very configuration whose state file is unreadable: resuming would fail
    the run, --force ignores the checkpoint and starts over."""
    argv = ["run", "--plugins", "torch_merge", *BASE, "--steps", "3", "--study", "f"]
    assert run(*argv, data_dir=data_dir, cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "results" / "f" / "torch_merge-s0"
    digest = json.loads((run_dir / "config.json").read_text())["config_hash"]
    (run_dir / "metrics.json").unlink()  # unfinished, with a checkpoint that cannot be loaded
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (run_dir / "checkpoint.json").write_text(json.dumps({"config_hash": digest, "file": "checkpoint.pt", "loop": {}}))
    resumed = run(*argv, data_dir=data_dir, cwd=tmp_path)
    assert resumed.returncode == 1 and "resuming from its last epoch checkpoint" in resumed.stdout
    assert "checkpoint results/f/torch_merge-s0/checkpoint.pt cannot be loaded" in resumed.stdout
    assert "delete it or rerun with --force" in resumed.stdout
    (run_dir / "checkpoint.json").write_text(json.dumps({"config_hash": digest, "file": "checkpoint.pt", "loop": {}}))
    forced = run(*argv, "--force", data_dir=data_dir, cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "resum" not in forced.stdout and "resumed" not in (run_dir / "stdout.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (("--executor", "dask"), "invalid choice"),
    (("--jobs", "0"), "--jobs and --threads must be positive"),
    (("--address", "ray://nowhere:10001"), "--address is the Ray cluster's: use it with --executor ray"),
    (("--plugins", "torch_merge,torch_merge"), "'torch_merge' appears twice in the study"),
])
def test_bad_scale_out_flags_are_one_line(argv, message, small_dataset, data_dir, tmp_path):
    plugins = () if "--plugins" in argv else ("--plugins", "torch_merge")
    proc = run("run", *plugins, *BASE, "--steps", "3", *argv, data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
