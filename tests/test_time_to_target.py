"""Time to target and the A/A control, end to end on the small dataset."""

from __future__ import annotations

import json

from tests.test_run_cli import run


def test_a_met_target_stops_training_and_an_unreachable_one_ends_not_reached(small_dataset, data_dir, tmp_path):
    met = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--epochs", "3", "--target",
              "val_loss=100", "--no-meteor", "--study", "met", data_dir=data_dir, cwd=tmp_path)
    assert met.returncode == 0, met.stdout + met.stderr
    m = json.loads((tmp_path / "results" / "met" / "torch_merge-s0" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["training"]["epochs"] == 1  # met after epoch 1: no epoch 2
    t = m["target"]
    assert t["reached"] and t["epochs"] == 1 and t["steps"] == m["training"]["steps"]
    assert t["train_time_s"] == m["training"]["train_time_s"] and t["tokens"] > 0

    never = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--epochs", "2", "--target",
                "val_bleu4=0.99", "--seeds", "2", "--aa-control", "--no-meteor", "--study", "never",
                data_dir=data_dir, cwd=tmp_path)
    assert never.returncode == 0, never.stdout + never.stderr  # not reaching a target is a result, not a failure
    study = tmp_path / "results" / "never"
    for folder in ("torch_merge-s0", "torch_merge-s1", "aa-control-s2", "aa-control-s3"):  # A/A: disjoint seeds
        m = json.loads((study / folder / "metrics.json").read_text())
        assert m["status"] == "not reached" and m["training"]["epochs"] == 2 and not m["target"]["reached"]
    report = (study / "report.md").read_text()
    assert "### Time to target" in report and "| torch_merge     | val_bleu4=0.99 | 2 of 2" in report
    assert "| aa-control − torch_merge (A/A control: torch_merge again with seeds 2-3" in report


def test_target_needs_a_cap_and_a_known_metric(small_dataset, data_dir, tmp_path):
    for argv, message in ((["--target", "val_loss=2"], "--target val_loss=2: give a cap too"),
                          (["--target", "bleu=0.2", "--epochs", "2"], "METRIC one of val_bleu4, val_loss")):
        proc = run("run", "--plugins", "torch_merge", "--dataset", "synthetic-small", *argv, data_dir=data_dir,
                   cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
