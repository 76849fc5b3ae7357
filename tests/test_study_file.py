"""Study files: the shipped seed000 study names a hypothesis per row, and every row is runnable."""

from __future__ import annotations

import json

import pytest

from benchmarks.study import StudyOptions, check, load_study_file
from plugins.registry import get_plugin
from shared_data.errors import UserError


def test_seed000_study_has_a_runnable_row_per_hypothesis():
    name, variants = load_study_file("seed000")
    assert name == "seed000" and variants[0].label == "torch_concat"
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
    _, variants = load_study_file(study)
    rows = {(str(v.plugin), bool(v.settings.get("compile"))) for v in variants}
    assert rows == {(f"{keras}@tensorflow", False), (f"{keras}@tensorflow", True), (f"{keras}@jax", False),
                    (f"{keras}@torch", False), (torch, False), (torch, True)}
    assert all(v.hparams.get("lstm_bias") == "one" for v in variants if v.plugin.name == torch)
    assert all(set(v.settings) <= {"compile"} and v.expect is None for v in variants)  # speed differs, not math
    check(StudyOptions(variants=variants))
