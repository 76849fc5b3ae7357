"""Execution settings (backends.common.Execution): bf16 mixed precision and compilation.

bf16 must change the arithmetic (a run that silently stayed in fp32 would pass for bf16) and stay
close to fp32's; compiling must change nothing but speed: torch.compile draws eager's dropout
numbers, so its losses are eager's; XLA's are Keras' own to rounding on a model without dropout.
Through the CLI, the setting reaches the run, its config hash and its report; `ablate` varies it."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import backends
from backends.common import Execution, OptimConfig
from benchmarks.run import preflight
from plugins.registry import ModelSpec, get_plugin
from shared_data.batches import iterate_batches
from shared_data.dataset import load_dataset
from tests.test_every_plugin import BUILTIN, small
from tests.test_run_cli import run


@pytest.fixture(scope="module")
def data(small_dataset):
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    return ds, feats, ModelSpec.of(ds, feats)


def _train(data, name, execution, steps=3, **hp):
    ds, feats, spec = data
    plugin = get_plugin(name)
    backend = backends.load(plugin.framework)
    hp = small(plugin.name, **hp)
    runner = backend.Runner(plugin, spec, hp, seed=0, optim=OptimConfig(lr=3e-3), execution=execution)
    batches = list(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0,
                                   pad_to_max=backend.FIXED_SHAPES))[:steps]
    return runner, [runner.train_step(b) for b in batches]


@pytest.mark.parametrize("name", BUILTIN)
def test_bf16_changes_the_arithmetic_not_the_result(data, name):
    ds, feats, spec = data
    if name.startswith("torch_") and (why := preflight.trial(name, {}, "bf16")) is not None:
        pytest.skip(f"this CPU runs no bf16 {name} ({why}); the CLI refuses it up front, "
                    "test_bf16_is_refused_up_front_where_the_cpu_cannot")
    _, fp32 = _train(data, name, Execution())
    runner, bf16 = _train(data, name, Execution("bf16"))
    assert np.isfinite(bf16).all()
    assert bf16 != fp32  # rounded somewhere: bf16 is in effect
    np.testing.assert_allclose(bf16, fp32, rtol=1e-2)
    g, s = feats.global_[:4], feats.spatial[:4]
    for out in (runner.greedy(g, s, ds.max_length), runner.beam(g, s, ds.max_length, beam=3, alpha=0.6)):
        assert out.shape[0] == 4 and out.dtype.kind == "i"
    assert keras.config.dtype_policy().name == "float32"  # the policy is the Runner's, not the process's


def test_torch_compile_is_the_eager_run(data):
    import torch._dynamo

    ds, feats, _ = data
    torch._dynamo.reset()
    eager_runner, eager = _train(data, "torch_merge", Execution(), steps=4)
    compiled_runner, compiled = _train(data, "torch_merge", Execution(compile=True), steps=4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert compiled == eager  # dropout included: fallback_random draws eager's numbers
    g = feats.global_[:6]
    np.testing.assert_array_equal(compiled_runner.greedy(g, None, ds.max_length),
                                  eager_runner.greedy(g, None, ds.max_length))
    assert list(compiled_runner.model.state_dict()) == list(eager_runner.model.state_dict())  # same weights files


def test_keras_jit_compile_matches_graph_mode(data):
    _, graph = _train(data, "keras_merge", Execution(), dropout=0.0)
    runner, xla = _train(data, "keras_merge", Execution(compile=True), dropout=0.0)
    assert runner.model.jit_compile is True
    np.testing.assert_allclose(xla, graph, rtol=1e-4)


def test_keras_attention_lstm_compiles_with_xla(data):
    """Its time loop is a Python loop over the fixed length: TensorFlow's scan has no gradient under XLA."""
    _, graph = _train(data, "keras_attention_lstm", Execution(), steps=2)
    _, xla = _train(data, "keras_attention_lstm", Execution(compile=True), steps=2)
    np.testing.assert_allclose(xla, graph, rtol=1e-4)


def test_run_and_ablate_carry_the_setting(small_dataset, data_dir, tmp_path):
    # torch_rnn: nn.RNN runs in bf16 on AVX2-only CPUs too, nn.LSTM does not (the test below)
    proc = run("ablate", "torch_rnn", "--vary", "precision=fp32,bf16", "--dataset", "synthetic-small",
               "--steps", "3", "--no-meteor", "--study", "a", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = tmp_path / "results" / "a"
    base = json.loads((study / "base-s0" / "metrics.json").read_text())
    bf16 = json.loads((study / "precision=bf16-s0" / "metrics.json").read_text())
    assert base["execution"] == {"precision": "fp32", "compile": False}
    assert bf16["execution"] == {"precision": "bf16", "compile": False}
    cfg = json.loads((study / "precision=bf16-s0" / "config.json").read_text())
    assert cfg["settings"]["precision"] == "bf16" and cfg["settings"]["compile"] is False
    assert "bf16" in (study / "report.md").read_text()

    proc = run("run", "--plugins", "torch_rnn", "--precision", "fp16", "--dataset", "synthetic-small",
               "--steps", "3", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "--precision fp16: expected one of fp32, bf16" in proc.stderr
    proc = run("ablate", "torch_rnn", "--vary", "compile=maybe", "--dataset", "synthetic-small",
               "--steps", "3", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


# oneDNN's cap on the instruction set it uses: an AVX-512 machine then builds what an AVX2-only CPU does
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_bf16_is_refused_up_front_where_the_cpu_cannot(small_dataset, data_dir, tmp_path):
    """oneDNN builds no bf16 LSTM without AVX-512: the study stops before any run, in one line that names
    the plugins that cannot, and not those that can (nn.RNN, nn.LSTMCell, the Transformer, Keras)."""
    proc = run("ablate", "torch_merge", "--vary", "precision=fp32,bf16", "--dataset", "synthetic-small",
               "--steps", "3", "--no-meteor", "--study", "a", data_dir=data_dir, cwd=tmp_path, env=AVX2_ONLY)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --precision bf16: torch_merge cannot run in bf16 on this machine")
    assert "AVX-512" in proc.stderr and "--precision fp32" in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing started, nothing written

    proc = run("run", "--plugins", "torch_concat,torch_rnn,torch_show_attend_tell,torch_transformer,keras_merge",
               "--precision", "bf16", "--dataset", "synthetic-small", "--steps", "3", "--no-meteor", "--study", "b",
               data_dir=data_dir, cwd=tmp_path, env=AVX2_ONLY)
    assert proc.returncode == 2, proc.stderr
    named = proc.stderr.split(" cannot run")[0].removeprefix("error: --precision bf16: ").split(", ")
    assert named == ["torch_concat"]


@pytest.mark.parametrize("name", ["keras_merge", "keras_transformer"])
def test_keras_trains_on_batches_cut_to_their_longest_caption_with_the_same_losses(data, name):
    """TensorFlow's graph mode takes a new length without retracing, so the Keras backend drops the trailing
    pads the harness added (fewer positions to compute); the losses and the weights after the steps are those
    of the padded batches, and a model that unrolls its time loop keeps the padded length."""
    from backends.keras import train as T

    ds, feats, spec = data
    batches = list(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0, pad_to_max=True))[:3]
    assert all(int(b.lengths.max()) < b.tokens.shape[1] for b in batches)  # there is something to cut
    hp = small(name)
    models, losses = [], []
    for cut in (True, False):
        keras.utils.set_random_seed(0)
        model = get_plugin(name).build(spec, dropout=0.0, **hp)
        T.compile_model(model, OptimConfig(lr=3e-3))
        fed = [T.cut_to_longest(model, b) if cut else b for b in batches]
        losses.append([float(model.train_on_batch(T.inputs(b), b.targets, sample_weight=b.mask)) for b in fed])
        models.append(model)
        if cut:
            assert [b.tokens.shape[1] for b in fed] == [int(b.lengths.max()) for b in batches]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    # Adam moves a weight whose gradient is round-off (a bias the batch barely touches) by up to lr a step
    # either way, so weights are compared to 1e-4: 1% of what three steps at lr 3e-3 can move them
    for a, b in zip(models[0].weights, models[1].weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-4)
    cut_eval = T.eval_loss(models[0], batches)
    padded_eval = sum(float(models[0].test_on_batch(T.inputs(b), b.targets, sample_weight=b.mask)) * b.num_tokens
                      for b in batches) / sum(b.num_tokens for b in batches)
    np.testing.assert_allclose(cut_eval, padded_eval, rtol=1e-5)


def test_keras_models_that_unroll_their_time_loop_keep_the_padded_length(data):
    from backends.keras import train as T

    ds, feats, spec = data
    batch = next(iter(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0, pad_to_max=True)))
    for name in ("keras_show_attend_tell", "keras_attention_lstm"):
        hp = small(name)
        model = get_plugin(name).build(spec, **hp)
        T.compile_model(model, OptimConfig())
        assert T.cut_to_longest(model, batch) is batch, name


@pytest.mark.parametrize("name", ["torch_attention_lstm", "torch_show_attend_tell"])
def test_compiled_torch_time_loops_train_on_max_length_with_the_same_losses(data, name, monkeypatch):
    """torch.compile unrolls a Python time loop for one length and compiles again for every other one, so
    under --compile those plugins (FIXED_LENGTH) get batches padded to max_length: the trailing pads change
    no loss (checked eagerly, dropout off, as compiling is checked against eager above); without
    --compile, and for a model without a time loop, the harness's batches (cut to the longest) go in as
    they are."""
    from backends.runner import LONGEST, MAX_LENGTH
    from backends.torch import runner as torch_runner
    from backends.torch import train as T
    from shared_data.batches import expand_prefixes, to_width

    ds, feats, spec = data
    batches = list(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0))[:3]
    assert all(b.tokens.shape[1] < ds.max_length for b in batches)  # there is something to pad
    hp = small(name, dropout=0.0)
    losses = []
    for width in (None, ds.max_length):
        runner = torch_runner.Runner(get_plugin(name), spec, hp, seed=0, optim=OptimConfig(lr=3e-3))
        losses.append([runner.train_step(b if width is None else to_width(b, width)) for b in batches])
        assert runner.batch_width() == LONGEST
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)

    seen = []
    monkeypatch.setattr(T, "train_step", lambda model, opt, batch, *a: seen.append(batch.tokens.shape[1]) or 0.0)
    for plugin, compile_, width in ((name, True, ds.max_length), (name, False, batches[0].tokens.shape[1]),
                                    ("torch_merge", True, batches[0].tokens.shape[1])):
        hp = small(plugin)
        runner = torch_runner.Runner(get_plugin(plugin), spec, hp, seed=0, optim=OptimConfig(),
                                     execution=Execution(compile=compile_))
        runner.train_step(batches[0])  # the stand-in step records the width; nothing compiles
        assert seen[-1] == width, (plugin, compile_)
        assert runner.batch_width() == (MAX_LENGTH if width == ds.max_length else LONGEST)

    prefix = expand_prefixes(batches[0].tokens, batches[0].lengths, batches[0].rows, feats)
    wide = to_width(prefix, ds.max_length - 1)
    assert wide.tokens.shape[1] == wide.next_tokens.shape[1] == ds.max_length - 1  # its targets widen with it
    assert wide.num_tokens == prefix.num_tokens and not wide.next_tokens[:, prefix.tokens.shape[1]:].any()
