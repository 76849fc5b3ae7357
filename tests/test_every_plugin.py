"""Every registered plugin, through its framework's runner, the way the harness drives it (timm-style:
a new plugin is tested the moment it is registered). Its model fits its framework's Protocol
(plugins/contract.py). On one small batch: a finite training loss
that includes nothing but numbers, greedy and beam captions of the right shape that stop at <end>,
parameter counts, and a weights file that loads back into a fresh model."""

from __future__ import annotations

import numpy as np
import pytest

from backends.common import OptimConfig
from plugins.contract import CONTRACTS, Attends
from plugins.registry import FRAMEWORKS, ModelSpec, available_names, framework_of, get_plugin
from shared_data.batches import iterate_batches
from shared_data.dataset import load_dataset

BUILTIN = [n for n in available_names() if framework_of(n) in FRAMEWORKS]


def small(name: str, **hp) -> dict:
    """The plugin's small test sizes (its family declares them), plus `hp`: fast, every shape kept."""
    return {**get_plugin(name).test_sizes, **hp}


@pytest.fixture(scope="module")
def data(small_dataset):
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    spec = ModelSpec.of(ds, feats)
    return ds, feats, spec


@pytest.mark.parametrize("name", BUILTIN)
def test_plugin_trains_decodes_and_saves(data, name, tmp_path):
    check_plugin(*data, name, tmp_path)


def check_plugin(ds, feats, spec, name, tmp_path, max_len: int | None = None, other_engine: bool = False) -> None:
    """The checks above; tests/engine_probe.py runs them on Keras' other engines too (other_engine),
    with a shorter `max_len` for decoding (on JAX every prefix length of the Transformer is a program
    to compile) and without what it checks itself or does not depend on the engine: training (the probe
    trains through the same train_step and compares its losses with TensorFlow's; on JAX each model's
    compiled step costs up to 47 s) and check_image_state (the model's code)."""
    import backends

    plugin = get_plugin(name)
    backend = backends.load(plugin.framework)
    hp = small(name)
    runner = backend.Runner(plugin, spec, hp, seed=0, optim=OptimConfig(lr=3e-3))
    assert isinstance(runner.model, CONTRACTS[plugin.framework]), f"{name}: see plugins/contract.py"
    if not other_engine:
        batches = list(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0,
                                       pad_to_max=backend.FIXED_SHAPES))[:3]
        losses = [runner.train_step(b) for b in batches]
        assert all(np.isfinite(losses)) and losses[0] > 0
    params = runner.parameters()
    assert params["total"] >= params["trainable"] > 0 and sum(params["components"].values()) == params["total"]

    g, s = feats.global_[:5], feats.spatial[:5]
    max_len = max_len or ds.max_length
    greedy = runner.greedy(g, s, max_len)
    beam = runner.beam(g, s, max_len, beam=3, alpha=0.6)
    for out in (greedy, beam):
        assert out.shape[0] == 5 and out.shape[1] <= max_len - 1
        for row in out:  # nothing but pads after <end>
            ends = np.flatnonzero(row == spec.end_id)
            if len(ends):
                assert (row[ends[0] + 1:] == spec.pad_id).all()
    if not other_engine:
        check_image_state(runner, g, s, max_len, beam)
    if runner.has_attention():
        assert isinstance(runner.model, Attends)
        tokens, alphas = runner.greedy_attention(g, s, max_len)
        assert alphas.shape == (*tokens.shape, spec.spatial_shape[0])
        np.testing.assert_allclose(alphas.sum(-1), 1.0, atol=1e-5)

    path = runner.save(tmp_path / "weights")
    fresh = backend.Runner(plugin, spec, hp, seed=1, optim=OptimConfig())
    fresh.load_file(path)
    np.testing.assert_array_equal(fresh.greedy(g, s, max_len), greedy)


def check_image_state(runner, g, s, max_len: int, beam: np.ndarray) -> None:
    """The state's IMAGE_STATE first entries (plugins/contract.py) come out of a step as they went in, and
    beam search that leaves them in place finds what beam search that reorders them finds."""
    k = getattr(runner.model, "IMAGE_STATE", 0)
    if not k:
        return
    with runner._decoding():
        state = runner._repeat_rows(runner._init_state(g, s), 2)
        _, after = runner._step(state, np.full(2 * len(g), runner.spec.start_id, np.int64))
        for before, now in zip(state[:k], after[:k], strict=True):
            np.testing.assert_array_equal(runner._numpy(now), runner._numpy(before))
    runner.model.IMAGE_STATE = 0  # this instance reorders every entry
    try:
        np.testing.assert_array_equal(runner.beam(g, s, max_len, beam=3, alpha=0.6), beam)
    finally:
        del runner.model.IMAGE_STATE
