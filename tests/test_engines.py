"""The same Keras plugin on Keras' three engines (TensorFlow, JAX, PyTorch) computes the same thing.

CapBench separates the API (Keras vs torch.nn) from the engine underneath; that split means
something only if a Keras model is one model whatever runs it. For every Keras plugin (tests/engine_probe.py:
small sizes, dropout 0), with the TensorFlow model's initial weights loaded on each engine:
- the teacher-forced logits agree at every real position within 1e-5 (fp32);
- five Adam steps through the harness's compile/train_on_batch give the same losses within relative
  1e-5 (measured on 2026-12-02: at most 7.2e-7 apart in the logits, 3.8e-7 relative in the losses),
  although TensorFlow and PyTorch train on batches cut to their longest caption and JAX on max_length
  ones (backends.keras.train.cut_to_longest), and JAX's step is jitted;
- the runner's whole contract works on the engine (tests/test_every_plugin.py's checks: training,
  greedy and beam decoding, attention maps, weights saved and loaded back).
JAX and PyTorch run in their own processes (Keras picks its engine at its first import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import engine_probe

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ["jax", "torch"]


@pytest.fixture(scope="module")
def tensorflow_side(small_dataset, tmp_path_factory):
    weights = tmp_path_factory.mktemp("engine-weights")
    return weights, engine_probe.probe(small_dataset, weights)  # this process's Keras runs on TensorFlow


@pytest.mark.parametrize("engine", ENGINES)
def test_every_keras_plugin_computes_the_same_on_every_engine(engine, tensorflow_side, small_dataset, tmp_path):
    import keras

    assert keras.backend.backend() == "tensorflow"
    pytest.importorskip(engine)
    weights, tf_out = tensorflow_side
    out = tmp_path / f"{engine}.npz"
    env = dict(os.environ, KERAS_BACKEND=engine, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "engine_probe.py"), str(small_dataset), str(weights),
                           str(out), str(tmp_path)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        other = dict(f)
    assert sorted(other) == sorted(tf_out)

    from shared_data.batches import iterate_batches
    from shared_data.dataset import load_dataset

    ds = load_dataset(str(small_dataset))
    first = next(iter(iterate_batches(ds, "train", ds.features(ds.default_extractor), batch_size=16, seed=0,
                                      epoch=0, pad_to_max=True)))
    real = first.mask.astype(bool)
    for name in engine_probe.SMALL:
        a, b = tf_out[f"{name}.logits"], other[f"{name}.logits"]
        assert a.shape == b.shape == (*first.inputs.shape, len(ds.vocab)), name
        np.testing.assert_allclose(b[real], a[real], atol=1e-5, rtol=0, err_msg=f"{name} on {engine}: logits")
        la, lb = tf_out[f"{name}.losses"], other[f"{name}.losses"]
        assert la[-1] < la[0] - 0.05, f"{name}: five steps that did not learn compare nothing"
        np.testing.assert_allclose(lb, la, rtol=1e-5, err_msg=f"{name} on {engine}: losses over {len(la)} steps")
        # JAX's step is jitted without --compile (eager JAX dispatches op by op); the others stay uncompiled
        assert bool(other[f"{name}.jit_compile"]) is (engine == "jax"), name
        assert not tf_out[f"{name}.jit_compile"], name
