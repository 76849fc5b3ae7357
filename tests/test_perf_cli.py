"""`python -m benchmarks perf` (benchmarks/perf/measure.py): what its figures rest on.

Proven here: batched beam search gives the very captions one-image-at-a-time search gives (so the
decoding speed-up compares equal work); the merge family's FLOP formula, the numerator of MFU, agrees
with torch's own FlopCounterMode count of a forward+backward; a quick run writes perf.json and
perf.md with the expected columns and positive rates; a missing dataset is a one-line error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.perf import flops, tables, timing
from benchmarks.perf import measure as perf
from shared_data.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    perf.add_arguments(parser)
    return parser.parse_args(argv)


def _torch_runner(small_dataset, units: int = 32):
    from backends.common import OptimConfig
    from backends.torch.runner import Runner
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.dataset import load_dataset

    ds = load_dataset(str(small_dataset), verify=False)
    feats = ds.features("grid")
    spec = ModelSpec.of(ds, feats)
    return Runner(get_plugin("torch_merge"), spec, {"units": units}, 0, OptimConfig()), ds, feats


def test_batched_beam_gives_the_per_image_captions(small_dataset):
    runner, ds, feats = _torch_runner(small_dataset)
    rows = ds.splits["test"].feature_rows[:6]
    for beam in (3, 5):
        d = timing.time_decoding(runner, feats.global_[rows], None, ds.max_length, beam, 0.6)
        assert d["images"] == 6 and d["captions_differ"] == 0
        assert d["batched_captions_per_s"] > 0 and d["per_image_captions_per_s"] > 0


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_merge_flop_formula_matches_flop_counter(fusion):
    """Equal-length captions, so no padding: the formula and the counter see the same work.

    Tolerance 2%: the formula's "backward = 2 x forward" charges two things the backward skips, the
    gradient into the image features (not trainable) and the recurrent weight gradient of the first
    step (h0 = 0); at these shapes they are ~1% of the total. The counter also checks the 3x rule."""
    import torch

    import backends
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import Batch

    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=176, global_dim=192, spatial_shape=None, max_length=22)
    hp = dict(get_plugin("torch_merge").defaults, units=32, fusion=fusion, hidden_layers=2)
    model = get_plugin("torch_merge").build(spec, **hp)
    b, length = 16, 22
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, spec.vocab_size, (b, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = spec.start_id, spec.end_id
    batch = Batch(rows=np.arange(b), tokens=tokens, lengths=np.full(b, length, np.int32),
                  global_feats=rng.standard_normal((b, spec.global_dim), np.float32), spatial_feats=None)
    counted = backends.load("torch").Runner.count_flops(model, batch)
    formula = flops.merge_flops_per_token(spec, hp, tokens_per_caption=length - 1)
    assert counted == pytest.approx(formula, rel=0.02)
    assert counted < formula  # the skipped gradients, not a missing layer


def test_quick_perf_run_writes_table(small_dataset, data_dir, tmp_path, capsys):
    plugins = ["torch_merge", "keras_merge"]
    args = _parse(["--quick", "--plugins", ",".join(plugins), "--dataset", str(small_dataset),
                   "--data-dir", str(data_dir), "--shapes", "dataset", "--out", str(tmp_path)])
    assert perf.main(args) == 0
    printed = capsys.readouterr().out
    assert "| plugin" in printed and "speed-up" in printed  # the github table went to stdout
    report = json.loads((tmp_path / "perf.json").read_text())
    assert report["headers"] == tables.HEADERS
    assert report["matmul"]["torch_gflops"] > 0 and report["matmul"]["numpy_gflops"] > 0
    assert [r["plugin"] for r in report["results"]] == plugins
    for r in report["results"]:
        assert "error" not in r, r
        for mode in ("sequence", "prefix"):
            assert r["training"][mode]["tokens_per_s"] > 0
        assert r["flops_per_token"] > 0 and 0 < r["mfu"]["sequence"]
        assert [d["beam"] for d in r["decoding"]] == [3] and r["decoding"][0]["captions_differ"] == 0
    measures = {row[2].split(" (")[0] for row in report["rows"]}
    assert {"training tokens/s", "s per epoch", "time to first step s", "beam 3 captions/s", "training GFLOP/s",
            "MFU"} <= measures
    assert report["settings"]["finished"] is True
    md = (tmp_path / "perf.md").read_text()
    assert "| plugin" in md and "keras_merge" in md and "torch_merge" in md
    engines = md.split("## API or engine?")[1]  # the twins side by side, one line
    assert "| merge " in engines and "Keras@tensorflow ÷ torch.nn" in engines


def test_perf_keeps_what_it_measured_when_stopped_half_way(tmp_path, monkeypatch):
    """perf.json and perf.md are rewritten after every plugin: a time limit or ^C loses only the plugin in flight."""
    def child(job):
        if job["kind"] == "matmul":
            return {"n": 8, "torch_gflops": 100.0, "numpy_gflops": 90.0, "torch_bf16_gflops": 300.0, "device": "cpu"}
        if job["plugin"] != "torch_merge":
            raise KeyboardInterrupt  # stopped while the second plugin runs
        return {"plugin": "torch_merge", "framework": "torch", "shapes": job["shapes"], "vocab_size": 10,
                "global_dim": 4, "batch_size": 2, "epoch_batches": {"sequence": 10}, "device": "cpu",
                "versions": {"torch": "x"}, "flops_per_token": 1e6, "flops_source": "formula", "decoding": [],
                "training": {"sequence": {"tokens_per_s": 500.0, "steps_per_s": 5.0, "first_step_s": 0.5}}}

    monkeypatch.setattr(perf, "run_child", child)
    args = _parse(["--plugins", "torch_merge,keras_merge", "--shapes", "flickr8k", "--out", str(tmp_path)])
    with pytest.raises(KeyboardInterrupt):
        perf.main(args)
    report = json.loads((tmp_path / "perf.json").read_text())
    assert [r["plugin"] for r in report["results"]] == ["torch_merge"]
    assert report["settings"]["finished"] is False
    assert "torch_merge" in (tmp_path / "perf.md").read_text()


def test_bf16_perf_is_over_the_bf16_matmul_rate(small_dataset, data_dir, tmp_path, monkeypatch):
    # torch_rnn: a bf16 nn.RNN runs on AVX2-only CPUs too (an nn.LSTM does not: refused, below)
    argv = ["--quick", "--plugins", "torch_rnn", "--dataset", str(small_dataset), "--data-dir", str(data_dir),
            "--shapes", "dataset", "--precision", "bf16", "--images", "0", "--out", str(tmp_path)]
    assert perf.main(_parse(argv)) == 0
    report = json.loads((tmp_path / "perf.json").read_text())
    (r,) = report["results"]
    assert r["execution"] == {"precision": "bf16", "compile": False}
    bf16_rate = report["matmul"]["torch_bf16_gflops"]
    assert r["mfu"]["sequence"] == pytest.approx(r["achieved_gflops"]["sequence"] / bf16_rate)
    assert any("bf16 matmul" in row[2] for row in report["rows"])

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the trial's child process builds what an AVX2 CPU does
    argv[argv.index("torch_rnn")] = "torch_merge"
    with pytest.raises(UserError, match=r"^--precision bf16: torch_merge cannot run in bf16 on this machine"):
        perf.main(_parse(argv))


def test_features_both_times_memory_beside_disk(small_dataset, data_dir, tmp_path):
    args = _parse(["--quick", "--plugins", "torch_merge", "--dataset", str(small_dataset), "--data-dir",
                   str(data_dir), "--shapes", "dataset", "--images", "0", "--features", "both", "--out", str(tmp_path)])
    assert perf.main(args) == 0
    report = json.loads((tmp_path / "perf.json").read_text())
    (r,) = report["results"]
    assert r["features_in_memory"]["tokens_per_s"] > 0 and r["training"]["sequence"]["tokens_per_s"] > 0
    assert "prefix" not in r["training"]  # the side-by-side replaces the recipe comparison
    (row,) = [row for row in report["rows"] if row[2].startswith("training tokens/s (features in memory")]
    assert row[5].endswith("x")


def test_missing_dataset_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.measure", "--dataset", "nope", "--data-dir",
                           str(tmp_path), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "python -m benchmarks prepare" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_profile_lists_the_operators_of_a_step_and_refuses_what_it_cannot_see():
    """benchmarks/perf/profile.py: torch.profiler over real train steps at Flickr8k shapes, operators by self
    time; a Keras plugin off the torch engine is one line, exit 2, before anything is built."""
    run = [sys.executable, "-m", "benchmarks.profile"]
    proc = subprocess.run([*run, "torch_rnn", "--steps", "1", "--top", "4"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch_rnn: 1 steps at Flickr8k shapes" in proc.stdout and "Self CPU" in proc.stdout
    assert "aten::" in proc.stdout  # real operators were recorded
    compiled = subprocess.run([*run, "torch_rnn", "--compile", "--steps", "1", "--top", "60"], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    assert "torch_rnn compiled: 1 steps at Flickr8k shapes" in compiled.stdout
    assert "CompiledFxGraph" in compiled.stdout  # inductor's kernels ran, not the eager operators alone
    bad = subprocess.run([*run, "keras_rnn"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "keras_rnn@torch" in bad.stderr


def test_engine_table_puts_each_architecture_on_one_line_with_its_factors():
    from benchmarks.perf.tables import ENGINE_HEADERS, engine_rows
    from plugins.registry import framework_of

    def result(plugin, engine, tokens_per_s, shapes="flickr8k"):
        framework = framework_of(plugin)
        return {"plugin": plugin, "framework": framework, "shapes": shapes,
                "versions": {"keras_backend": engine} if framework == "keras" else {"torch": "x"},
                "training": {"sequence": {"tokens_per_s": tokens_per_s, "first_step_s": 1.25}},
                "mfu": {"sequence": tokens_per_s / 10_000}}

    results = [result("torch_merge", None, 3000.0), result("keras_merge@torch", "torch", 1000.0),
               result("keras_merge@tensorflow", "tensorflow", 2500.0), result("keras_merge", "jax", 500.0),
               result("torch_merge_packed", None, 2000.0),  # no Keras twin: left out
               result("torch_transformer", None, 800.0, "dataset"),
               result("keras_transformer@jax", "jax", 400.0, "dataset"),
               result("torch_rnn", None, 900.0), {"error": "keras_rnn failed"}]  # no Keras row: left out
    rows = engine_rows(results)
    assert len(rows) == 2 and all(len(r) == len(ENGINE_HEADERS) for r in rows)
    merge = dict(zip(ENGINE_HEADERS, rows[0], strict=True))
    assert merge["architecture"] == "merge" and merge["shapes"] == "flickr8k"
    assert merge["torch.nn"] == "3,000 (30.0% MFU, 1.2 s)" and merge["Keras@jax"] == "500 (5.0% MFU, 1.2 s)"
    assert merge["API: torch.nn ÷ Keras@torch"] == "3.00x"
    assert merge["engine: Keras@tensorflow ÷ Keras@torch"] == "2.50x"
    assert merge["engine: Keras@jax ÷ Keras@tensorflow"] == "0.20x"
    assert merge["both: Keras@tensorflow ÷ torch.nn"] == "0.83x"
    transformer = dict(zip(ENGINE_HEADERS, rows[1], strict=True))  # what was not measured is not divided
    assert transformer["architecture"] == "transformer" and transformer["shapes"] == "dataset"
    assert transformer["Keras@tensorflow"] == "—" and transformer["engine: Keras@jax ÷ Keras@tensorflow"] == "—"


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps 0: expected a whole number in [1, inf)"),
    ("--warmup", "-1", "--warmup -1: expected a whole number in [0, inf)"),
    ("--beams", "0", "--beams 0: each beam size expected a whole number in [1, 100]"),
    ("--images", "-5", "--images -5: expected a whole number"),
    ("--out", __file__, "a file is in the way; give a folder for perf.json and perf.md"),
])
def test_perf_bounds_are_one_line_on_every_python(flag, value, message, capsys):
    """Integer bounds print as intervals; int.is_integer only exists from Python 3.12, which once made
    these a traceback on 3.11."""
    from benchmarks.cli import main

    assert main(["perf", flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err
