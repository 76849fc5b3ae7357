"""Speed regressions (pytest-benchmark): every registered plugin's training step, batched greedy
decoding and batched beam-3 decoding at Flickr8k-like shapes, on random data.

Shapes: V = 8,485 (Flickr8k's vocabulary, benchmarks.perf.shapes.FLICKR8K), captions of up to 35 tokens,
64 captions a training batch, 4096-d global features and, for the plugins that attend, 14x14x2048
spatial features (196 positions); decoding runs on 16 images. The plugins keep their default
hyperparameters: a regression in a default is a regression.

Two modes, chosen by pytest-benchmark's flags:
- quick (the default, `python -m pytest -q`, what CI runs): pyproject's addopts pass
  `--benchmark-disable`, so each benchmarked call runs once, untimed. Every benchmark is executed
  and must not crash; nothing is gated on timing noise.
- enabled (`tox -e perf`, tests/perf/gate.py): timed rounds, a table grouped by plugin, saved to a
  baseline and compared against it with a failure threshold.

A new plugin is benchmarked the moment it is registered (the list comes from the registry).
"""

from __future__ import annotations

import gc

import pytest

import backends
from backends.common import OptimConfig
from benchmarks.perf.shapes import FLICKR8K, flickr8k_batches
from plugins.registry import FRAMEWORKS, ModelSpec, available_names, framework_of, get_plugin

# PyTorch plugins first: TensorFlow keeps the memory it has used in its own pool (about 3.4 GB after
# keras_show_attend_tell's training step here) and reuses it, so Keras last lowers the peak (measured
# on the whole quick mode: 4.8 GB with PyTorch first, 6.7 GB with Keras first); alone (tox -e perf),
# TensorFlow is not even imported while PyTorch is timed
PLUGINS = sorted((n for n in available_names() if framework_of(n) in FRAMEWORKS),
                 key=lambda n: (framework_of(n) != "torch", n))
MAX_LENGTH = 35  # tokens including <start> and <end>, as the issue fixes it
BATCH_SIZE = 64  # captions per training step
IMAGES = 16  # images per decoding call: enough to batch, few enough to keep the quick mode cheap
BEAM, ALPHA = 3, 0.6  # the harness's defaults (README: beam 3, GNMT length normalisation 0.6)

# Keras warns on the Transformer's first decoding step, whose self-attention has one position to
# attend to: expected, and noise in every run's output
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis:UserWarning")


class PluginCase:
    """One plugin's runner at the fixed shapes, with its training batch and decoding features."""

    def __init__(self, name: str):
        self.plugin = get_plugin(name)
        self.backend = backends.load(self.plugin.framework)
        spatial = FLICKR8K["spatial_shape"] if self.plugin.needs_spatial else None
        self.spec = ModelSpec(FLICKR8K["vocab_size"], FLICKR8K["global_dim"], spatial, MAX_LENGTH)
        self.runner = self.backend.Runner(self.plugin, self.spec, {}, 0, OptimConfig())
        # one batch, reused every step: each round does the same work; Keras gets max-length batches
        # (FIXED_SHAPES) so that it never retraces
        (self.batch,) = flickr8k_batches(self.spec, BATCH_SIZE, self.backend.FIXED_SHAPES, seed=0, pool=1)
        self.global_feats = self.batch.global_feats[:IMAGES]
        self.spatial_feats = None if spatial is None else self.batch.spatial_feats[:IMAGES]

    def extra_info(self) -> dict:
        return {"framework": self.plugin.framework, "family": self.plugin.family,
                "device": self.runner.device_name(), "parameters": self.runner.parameters()["total"],
                "vocab_size": self.spec.vocab_size, "global_dim": self.spec.global_dim,
                "spatial_shape": self.spec.spatial_shape, "max_length": self.spec.max_length}


@pytest.fixture(scope="module", params=PLUGINS)
def case(request):
    """Built once per plugin (module scope, so pytest runs a plugin's benchmarks together and frees
    the runner before building the next one)."""
    c = PluginCase(request.param)
    yield c
    # pytest holds `c` until this teardown has returned: drop the model and the data now, so that the
    # next plugin is built in freed memory
    c.runner = c.batch = c.global_feats = c.spatial_feats = None
    if c.plugin.framework == "keras":
        import keras

        keras.backend.clear_session()  # TensorFlow keeps every model's graphs otherwise
    gc.collect()  # Keras models hold reference cycles


def _run(benchmark, case, fn, **info) -> None:
    benchmark.group = case.plugin.name
    benchmark.extra_info.update(case.extra_info(), **info)
    if benchmark.enabled:
        # Keras traces its graphs on the first call and PyTorch warms its allocator: keep that out of
        # the statistics and out of pytest-benchmark's calibration, which sets the number of rounds
        fn()
    benchmark(fn)


def test_train_step(benchmark, case):
    def step():
        case.runner.train_step(case.batch)
        case.runner.sync()  # a GPU step has finished only when synchronised

    _run(benchmark, case, step, batch_size=BATCH_SIZE, tokens_per_step=case.batch.num_tokens)


def test_greedy(benchmark, case):
    def greedy():
        case.runner.greedy(case.global_feats, case.spatial_feats, MAX_LENGTH)
        case.runner.sync()

    _run(benchmark, case, greedy, captions_per_call=IMAGES)


def test_beam3(benchmark, case):
    def beam():
        case.runner.beam(case.global_feats, case.spatial_feats, MAX_LENGTH, BEAM, ALPHA)
        case.runner.sync()

    _run(benchmark, case, beam, captions_per_call=IMAGES, beam=BEAM, alpha=ALPHA)
