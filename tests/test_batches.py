"""The batch iterator: same batches, same order, whatever consumes them."""

from __future__ import annotations

import numpy as np
import pytest

from shared_data.batches import CaptionTable, iterate_batches, num_batches
from shared_data.dataset import load_dataset


@pytest.fixture(scope="module")
def ds(small_dataset):
    return load_dataset(str(small_dataset))


def _collect(ds, **kw):
    feats = ds.features("grid")
    return list(iterate_batches(ds, "train", feats, **kw))


def test_same_arguments_same_batches(ds):
    a = _collect(ds, batch_size=64, seed=1, epoch=3)
    b = _collect(ds, batch_size=64, seed=1, epoch=3)
    assert len(a) == len(b) == num_batches(1500, 64)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.rows, y.rows)
        assert np.array_equal(x.global_feats, y.global_feats)


def test_global_random_state_does_not_matter(ds):
    np.random.seed(0)
    a = _collect(ds, batch_size=32, seed=1, epoch=0)
    np.random.seed(99)
    np.random.rand(10)
    b = _collect(ds, batch_size=32, seed=1, epoch=0)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))


def test_epochs_and_seeds_reshuffle_but_cover_everything(ds):
    e0 = _collect(ds, batch_size=50, seed=1, epoch=0)
    e1 = _collect(ds, batch_size=50, seed=1, epoch=1)
    s2 = _collect(ds, batch_size=50, seed=2, epoch=0)
    assert not np.array_equal(e0[0].rows, e1[0].rows) and not np.array_equal(e0[0].rows, s2[0].rows)
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    for batches in (e0, e1, s2):
        got = sorted(tuple(t[t != 0]) for b in batches for t in b.tokens)
        assert got == sorted(tuple(t[t != 0]) for t in table.tokens)


def test_batch_contents(ds):
    b = _collect(ds, batch_size=16, seed=0, epoch=0)[0]
    v = ds.vocab
    assert b.tokens.dtype == np.int32 and b.tokens.shape[0] == 16
    assert b.tokens.shape[1] == b.lengths.max()  # cut to the longest caption
    assert (b.tokens[:, 0] == v.start_id).all()
    assert (b.tokens[np.arange(16), b.lengths - 1] == v.end_id).all()
    assert np.array_equal(b.mask.sum(1), b.lengths - 1) and b.num_tokens == int(b.mask.sum())
    assert np.array_equal(b.inputs[:, 1:], b.targets[:, :-1])
    feats = ds.features("grid")
    assert np.array_equal(b.global_feats, feats.global_[b.rows])
    assert b.spatial_feats.shape == (16, 64, 32)
    # each caption sits with its own image: decode it and find it among that image's references
    split = ds.splits["train"]
    for tokens, row in zip(b.tokens, b.rows, strict=True):
        assert v.decode(tokens) in split.captions[row - split.feature_rows[0]]


def test_pad_to_max_and_drop_last(ds):
    batches = _collect(ds, batch_size=64, seed=0, epoch=0, pad_to_max=True, drop_last=True)
    assert len(batches) == 1500 // 64
    assert all(b.tokens.shape == (64, ds.max_length) for b in batches)


def test_unshuffled_order_is_file_order(ds):
    feats = ds.features("grid")
    b = next(iterate_batches(ds, "val", feats, batch_size=10, seed=0, epoch=0, shuffle=False))
    assert list(b.rows) == [ds.splits["val"].feature_rows[0]] * 5 + [ds.splits["val"].feature_rows[1]] * 5
