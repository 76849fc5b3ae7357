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
