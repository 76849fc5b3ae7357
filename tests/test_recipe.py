"""benchmarks/perf/recipe.py: the Kaggle notebook's own training, the denominator of "N times the recipe".

It must be the recipe's model (keras_merge's layers and parameter count), fed the samples perf's prefix
mode feeds (the same images a batch, the same prefixes and next words), and time real fit() steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.perf import recipe
from plugins.registry import ModelSpec, get_plugin
from shared_data.batches import CaptionTable, iterate_prefix_batches
from shared_data.dataset import load_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_the_recipe_is_keras_merge_fed_perfs_prefix_samples(small_dataset):
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid", spatial=False)
    spec = ModelSpec.of(ds, feats)
    model = recipe.build(len(ds.vocab), spec.global_dim, ds.max_length)
    assert model.count_params() == get_plugin("keras_merge").build(spec).count_params()
    assert sorted(type(layer).__name__ for layer in model.layers if layer.weights) == \
        ["Dense", "Dense", "Dense", "Embedding", "LSTM"]

    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    global_feats = np.asarray(feats.global_[:])
    per_batch = table.images_per_batch(64)
    ours = iterate_prefix_batches(ds, "train", feats, 64, 0, 0, padding="pre", pad_to_max=True, table=table)
    theirs = recipe.generator(table, global_feats, len(ds.vocab), ds.max_length, per_batch, seed=0)
    for _ in range(2):
        mine, ((x1, x2), y) = next(ours), next(theirs)
        assert len(y) == mine.num_tokens == len(mine.rows)
        np.testing.assert_array_equal(x2[:, 1:], mine.tokens)  # pre-padded: the notebook's width is one more
        assert not x2[:, 0].any()
        np.testing.assert_array_equal(y.argmax(1), mine.next_tokens.max(1))  # the one target of each sample
        np.testing.assert_array_equal(x1, mine.global_feats)


def test_the_recipe_command_times_fit_steps(small_dataset, data_dir):
    """Through its command, in a process of its own (Keras on TensorFlow, the notebook's engine)."""
    run = [sys.executable, "-m", "benchmarks.recipe", "--data-dir", str(data_dir)]
    out = subprocess.run([*run, "--dataset", small_dataset.name, "--steps", "3", "--warmup", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["tokens_per_s"] > 0 and r["steps"] == 3 and r["engine"] == "tensorflow"
    ds = load_dataset(str(small_dataset))
    dim = ds.features("grid").global_.shape[1]
    assert r["parameters"] == recipe.build(len(ds.vocab), dim, ds.max_length).count_params()
    for argv, says in ((["--dataset", "nope"], "prepare"), (["--steps", "0"], "--steps must be at least 1"),
                       (["--batch-size", "0"], "--batch-size and --steps must be at least 1")):
        bad = subprocess.run([*run, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and says in bad.stderr, bad.stderr
