"""`--training prefix`: the Keras recipe's one-sample-per-prefix expansion computes the same loss as
whole-sequence teacher forcing, for the same weights and captions, in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.registry import ModelSpec, get_plugin
from shared_data.batches import CaptionTable, expand_prefixes, iterate_batches, iterate_prefix_batches
from shared_data.dataset import load_dataset


class _Feats:
    global_ = np.arange(12, dtype=np.float32).reshape(3, 4)
    spatial = None


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_expansion_makes_one_sample_per_target_token(padding):
    tokens = np.array([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]], np.int32)
    b = expand_prefixes(tokens, np.array([4, 3], np.int32), np.array([0, 2]), _Feats, padding=padding)
    assert b.num_tokens == len(b.rows) == 5 and b.mask.sum() == 5
    assert list(b.rows) == [0, 0, 0, 2, 2]
    prefixes = [list(row[row != 0]) for row in b.inputs]
    assert prefixes == [[1], [1, 5], [1, 5, 6], [1], [1, 7]]
    assert list(b.targets[b.targets != 0]) == [5, 6, 2, 7, 2]
    last = b.inputs[:, -1] if padding == "pre" else b.inputs[np.arange(5), b.lengths - 2]
    assert list(last) == [1, 5, 6, 1, 7]  # each target sits right after its prefix's last token
    assert np.array_equal(b.global_feats, _Feats.global_[[0, 0, 0, 2, 2]])


@pytest.fixture(scope="module")
def ds(small_dataset):
    return load_dataset(str(small_dataset))


def test_prefix_batches_are_whole_images_and_cover_every_target_once(ds):
    feats = ds.features("grid")
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    batches = list(iterate_prefix_batches(ds, "train", feats, batch_size=64, seed=0, epoch=0, table=table))
    assert sum(b.num_tokens for b in batches) == int((table.lengths - 1).sum())
    per_image = {}
    for b in batches:
        for r in np.unique(b.rows):
            assert r not in per_image  # an image's prefixes all land in one batch
            per_image[r] = int((b.rows == r).sum())
    assert len(per_image) == len(ds.splits["train"].image_ids)
    assert {len(np.unique(b.rows)) for b in batches[:-1]} == {13}  # 64 captions / 5 per image


def _spec(ds, feats):
    return ModelSpec(len(ds.vocab), feats.global_.shape[1], None, ds.max_length)


def _same_captions(ds, feats, n_images=20, padding="post", pad_to_max=False):
    """The first n images' captions: once as whole-sequence batches, once as prefix batches."""
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    n = int(table.per_image[:n_images].sum())
    seq = [b for b in iterate_batches(ds, "train", feats, batch_size=n, seed=0, epoch=0, shuffle=False,
                                      table=table, pad_to_max=pad_to_max)][:1]
    pre = [expand_prefixes(table.tokens[:n], table.lengths[:n], table.rows[:n], feats, padding=padding,
                           width=ds.max_length - 1 if pad_to_max else None)]
    return seq, pre


def _warm_batches(ds, feats, pad_to_max=False):
    """A model at init predicts ~uniformly, where every loss is ~log V: train it a little first."""
    return list(iterate_batches(ds, "train", feats, batch_size=64, seed=1, epoch=0, pad_to_max=pad_to_max))[:15]


def test_torch_prefix_loss_equals_sequence_loss(ds):
    torch = pytest.importorskip("torch")
    from backends.common import OptimConfig
    from backends.torch.train import eval_loss, make_optimizer, train_step

    feats = ds.features("grid")
    torch.manual_seed(0)
    model = get_plugin("torch_merge").build(_spec(ds, feats))
    cfg = OptimConfig(lr=3e-3)
    opt = make_optimizer(model, cfg)
    for b in _warm_batches(ds, feats):
        train_step(model, opt, b, cfg, torch.device("cpu"))
    seq, pre = _same_captions(ds, feats, padding="post")
    a, b = eval_loss(model, seq, torch.device("cpu")), eval_loss(model, pre, torch.device("cpu"))
    assert a == pytest.approx(b, rel=1e-5)
    # and pre-padding without a mask is NOT the same model: the recurrence runs over leading pads
    _, pre_padded = _same_captions(ds, feats, padding="pre")
    assert a < 4.5 and abs(eval_loss(model, pre_padded, torch.device("cpu")) - a) > 1e-4  # measured: 1.2e-3


def test_keras_prefix_loss_equals_sequence_loss(ds):
    pytest.importorskip("keras")
    from backends.common import OptimConfig
    from backends.keras.train import compile_model, eval_loss, train_step

    feats = ds.features("grid")
    model = get_plugin("keras_merge").build(_spec(ds, feats))
    compile_model(model, OptimConfig(lr=3e-3))
    for b in _warm_batches(ds, feats, pad_to_max=True):
        train_step(model, b)
    seq, pre = _same_captions(ds, feats, padding="pre", pad_to_max=True)  # the recipe: pre-padded, masked
    loss = eval_loss(model, seq)
    assert loss < 4.5 and loss == pytest.approx(eval_loss(model, pre), rel=1e-5)
