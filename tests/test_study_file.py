"""Study files: the shipped seed000 study names a hypothesis per row, and every row is runnable."""

from __future__ import annotations

import json

import pytest

from benchmarks.run.plan import StudyOptions, check
from benchmarks.run.study_file import load_study_file
from plugins.registry import get_plugin
from shared_data.errors import UserError


def test_seed000_study_has_a_runnable_row_per_hypothesis():
    study = load_study_file("seed000")
    name, variants = study.name, study.variants
    assert name == "seed000" and variants[0].label == "torch_concat"
    # the reference's budget: to convergence (early stopping under a cap), 5 seeds, an A/A row
    assert study.settings["patience"] >= 2 and study.settings["epochs"] > 2 * study.settings["patience"]
    assert study.settings["seeds"] >= 5 and study.aa_control
    labels = [v.label for v in variants]
    assert len(set(labels)) == len(labels) and all(v.note for v in variants)
    for v in variants:
        assert set(v.hparams) <= set(get_plugin(v.plugin.name).defaults)
    # the five design choices seed 000 credits, each one factor away from the base
    assert {"fusion=add", "hidden_layers=2", "masking=packed", "dropout_placement=early",
            "batch_size=32"} <= set(labels)
    check(StudyOptions(variants=variants))  # hyperparameters and settings all valid


def test_bad_study_names_and_files(tmp_path):
    with pytest.raises(UserError, match="no study 'seed999'.*seed000"):
        load_study_file("seed999")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"variants": []}))
    with pytest.raises(UserError, match="not a study file"):
        load_study_file(str(bad))


@pytest.mark.parametrize("study, keras, torch", [("engines", "keras_merge", "torch_merge"),
                                                  ("engines_attention", "keras_show_attend_tell",
                                                   "torch_show_attend_tell")])
def test_engine_studies_run_one_model_on_every_engine(study, keras, torch):
    """API or engine: the same model as Keras on TensorFlow (graph and XLA), JAX and PyTorch, and in
    torch.nn eager and compiled; the PyTorch rows take Keras' single LSTM bias so the math is the same."""
    variants = load_study_file(study).variants
    rows = {(str(v.plugin), bool(v.settings.get("compile"))) for v in variants}
    assert rows == {(f"{keras}@tensorflow", False), (f"{keras}@tensorflow", True), (f"{keras}@jax", False),
                    (f"{keras}@torch", False), (torch, False), (torch, True)}
    assert all(v.hparams.get("lstm_bias") == "one" for v in variants if v.plugin.name == torch)
    assert all(set(v.settings) <= {"compile"} and v.expect is None for v in variants)  # speed differs, not math
    check(StudyOptions(variants=variants))


def test_a_study_file_carries_its_own_budget_and_the_command_line_overrides_it(tmp_path):
    import argparse

    from benchmarks.settings import add_arguments, from_args

    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"base": {"label": "a", "plugin": "torch_rnn"}, "variants": [],
                                "settings": {"epochs": 9, "patience": 2, "seeds": 4}, "aa_control": True}))
    study = load_study_file(str(path))
    assert study.settings == {"epochs": 9, "patience": 2, "seeds": 4} and study.aa_control
    p = argparse.ArgumentParser()
    add_arguments(p)
    s = from_args(p.parse_args([]), defaults=study.settings)
    assert (s.epochs, s.patience, s.seeds) == (9, 2, 4)
    s = from_args(p.parse_args(["--steps", "30", "--seeds", "2"]), defaults=study.settings)
    assert (s.epochs, s.steps, s.patience, s.seeds) == (None, 30, 2, 2)  # a budget flag replaces the file's budget
    path.write_text(json.dumps({"base": {"label": "a", "plugin": "torch_rnn"}, "variants": [],
                                "settings": {"epochs": 0}}))
    with pytest.raises(UserError, match="mine.json: settings.epochs"):
        load_study_file(str(path))


def test_the_plan_runs_seed_by_seed(tmp_path, small_dataset, data_dir):
    """Every row's k-th seed before any row's (k+1)-th: a study stopped part-way holds whole seeds."""
    from benchmarks.run.plan import Variant, plan_jobs
    from benchmarks.settings import RunSettings
    from plugins.registry import PluginRef

    variants = [Variant("a", PluginRef.parse("torch_rnn")), Variant("b", PluginRef.parse("torch_rnn"), {},
                                                                    {"seed": 10})]
    opts = StudyOptions(variants=variants, settings=RunSettings(seeds=3), dataset=small_dataset.name, jobs=1,
                        data_dir=data_dir)
    jobs = plan_jobs(opts, "identity", tmp_path)
    assert [(j.label, j.config["settings"]["seed"]) for j in jobs] == [
        ("a", 0), ("b", 10), ("a", 1), ("b", 11), ("a", 2), ("b", 12)]


def test_default_jobs_one_per_gpu_else_one_per_core_as_memory_allows(monkeypatch):
    import benchmarks.run.plan as plan
    from benchmarks.run.plan import Variant, default_jobs
    from benchmarks.settings import RunSettings
    from plugins.registry import PluginRef

    opts = StudyOptions(variants=[Variant("a", PluginRef.parse("torch_rnn"))], settings=RunSettings(seeds=5))
    monkeypatch.setattr(plan, "local_gpus", lambda: [])
    monkeypatch.setattr(plan.os, "cpu_count", lambda: 2)
    assert default_jobs(opts) == 2  # a 2-core machine: two one-thread runs side by side
    monkeypatch.setattr(plan.os, "cpu_count", lambda: 16)
    pages = {"SC_PHYS_PAGES": 6 * 2**30 // 4096, "SC_PAGE_SIZE": 4096}  # 6 GiB: room for 3 runs
    monkeypatch.setattr(plan.os, "sysconf", lambda name: pages[name])
    opts.settings = RunSettings(seeds=8)
    assert default_jobs(opts) == 3
    opts.settings = RunSettings(seeds=3)
    assert default_jobs(opts) == 1  # a few runs: one at a time, each with every core
    opts.settings = RunSettings(seeds=4)
    assert default_jobs(opts) == 2
    monkeypatch.setattr(plan, "local_gpus", lambda: ["0", "1"])
    opts.settings = RunSettings(seeds=5)
    assert default_jobs(opts) == 2
    opts.executor = "ray"
    assert default_jobs(opts) == 1
