"""`ablate`: variants built from --vary (one factor at a time, or factorial), run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.run.ablate import variants
from shared_data.errors import UserError


def test_one_factor_at_a_time_skips_the_base_value():
    vs = variants("torch_merge", ["fusion=add,concat", "hidden_layers=1,2", "adam_eps=1e-7,1e-8"])
    assert [v.label for v in vs] == ["base", "fusion=concat", "hidden_layers=2", "adam_eps=1e-07"]
    assert vs[1].hparams == {"fusion": "concat"} and vs[3].settings == {"adam_eps": 1e-7}
    assert all(str(v.plugin) == "torch_merge" for v in vs)


def test_factorial_and_keras_backend():
    vs = variants("torch_merge", ["fusion=add,concat", "dropout_placement=early,late"], factorial=True)
    assert [v.label for v in vs] == ["base", "dropout_placement=late", "fusion=concat",
                                     "fusion=concat,dropout_placement=late"]
    kv = variants("keras_merge", ["keras_backend=tensorflow,torch"])
    assert [str(v.plugin) for v in kv] == ["keras_merge", "keras_merge@torch"]


@pytest.mark.parametrize("vary, message", [
    (["fusoin=add,concat"], "cannot vary fusoin"),
    (["fusion"], "write KEY=V1,V2"),
    (["fusion=add"], "nothing to compare"),
    (["keras_backend=jax"], "not a Keras plugin"),
])
def test_bad_vary(vary, message):
    with pytest.raises(UserError, match=message):
        variants("torch_merge", vary)


def test_ablate_end_to_end(small_dataset, data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "ablate", "torch_merge", "--vary", "fusion=add,concat",
                           "--vary", "batch_size=32", "--dataset", "synthetic-small", "--steps", "8", "--no-meteor",
                           "--data-dir", str(data_dir)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = tmp_path / "results" / "ablate_torch_merge"
    configs = {p.parent.name: json.loads(p.read_text()) for p in study.glob("*/config.json")}
    assert set(configs) == {"base-s0", "fusion=concat-s0", "batch_size=32-s0"}
    assert configs["fusion=concat-s0"]["hparams"]["fusion"] == "concat"
    assert configs["batch_size=32-s0"]["settings"]["batch_size"] == 32
    assert configs["base-s0"]["settings"]["batch_size"] == 64
    report = (study / "report.md").read_text()
    assert "### Differences against base" in report
    assert "| fusion=concat − base" in report and "| batch_size=32 − base" in report
