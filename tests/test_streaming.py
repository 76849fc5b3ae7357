"""Features left on disk: rows read on demand give exactly what loading the file gave (the same
batches, the same losses to the last bit in both frameworks), float16 storage stays within a stated
tolerance, the prefetch thread keeps order and stops cleanly, and decoding batches are sized by
memory."""

from __future__ import annotations

import shutil
import threading

import h5py
import numpy as np
import pytest

import backends
from backends.common import OptimConfig
from benchmarks.data.options import PrepareOptions
from benchmarks.data.prepare import prepare
from plugins.registry import ModelSpec, get_plugin
from shared_data import features as features_mod
from shared_data.batches import iterate_batches, iterate_prefix_batches, prefetch
from shared_data.dataset import Features, load_dataset
from shared_data.dataset_writing import finalize_manifest
from shared_data.features import FeatureArray, ZeroRows, rows_per_chunk

SMALL = {"units": 32, "embed_dim": 32, "attention_dim": 32, "decoder_dim": 32}


@pytest.fixture(autouse=True)
def stream_everything(monkeypatch):
    """The small dataset's arrays are under LOAD_BELOW: stream them anyway, as a large dataset's are."""
    monkeypatch.setattr(features_mod, "LOAD_BELOW", 0)


@pytest.fixture(scope="module")
def ds(small_dataset):
    return load_dataset(str(small_dataset))


def test_features_stay_on_disk_and_index_like_numpy(ds):
    feats = ds.features("grid")
    assert isinstance(feats.global_, FeatureArray) and isinstance(feats.spatial, FeatureArray)
    loaded = feats.in_memory()
    assert isinstance(loaded.spatial, np.ndarray) and loaded.spatial.dtype == np.float32
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 400, 64), np.array([5, 5, 3, 399, 0, 3]), np.arange(100, 164), np.array([], int),
             np.array([-1, -400]), slice(10, 30), slice(None, None, 7), 17, np.int64(250)]
    for index in cases:
        for disk, memory in ((feats.global_, loaded.global_), (feats.spatial, loaded.spatial)):
            got = disk[index]
            np.testing.assert_array_equal(got, memory[index])
            assert got.dtype == np.float32
        np.testing.assert_array_equal(ZeroRows(feats.global_.shape)[index], np.zeros_like(loaded.global_)[index])
    np.testing.assert_array_equal(feats.global_[:, :10], loaded.global_[:, :10])
    np.testing.assert_array_equal(feats.spatial[np.array([3, 1]), 2], loaded.spatial[[3, 1], 2])
    for rows in (feats.global_, ZeroRows(feats.global_.shape)):
        with pytest.raises(IndexError):
            rows[np.array([400])]


def test_small_arrays_are_read_whole_once(ds, monkeypatch):
    monkeypatch.setattr(features_mod, "LOAD_BELOW", 256 << 20)
    reads = []
    real = FeatureArray.read_sorted
    monkeypatch.setattr(FeatureArray, "read_sorted", lambda self, rows: reads.append(len(rows)) or real(self, rows))
    feats = load_dataset(str(ds.path)).features("grid")  # the finiteness check reads each array: whole, once
    rows = np.array([7, 3, 3, 399])
    np.testing.assert_array_equal(feats.spatial[rows], np.asarray(feats.spatial)[rows])
    feats.spatial[np.arange(10)]
    assert reads == [400, 400]  # global and spatial, once each


def test_new_files_are_chunked_for_random_reads(ds):
    with h5py.File(ds.path / "features/grid.h5") as f:
        spatial = f["spatial"]  # 64 x 32 float32 = 8 KiB a row: 8 rows a chunk
        assert spatial.chunks == (rows_per_chunk(spatial.shape[1:], "float32", len(spatial)), 64, 32) == (8, 64, 32)
    assert rows_per_chunk((196, 2048), "float16", 8091) == 1  # Show, Attend and Tell's grid: an image a chunk


def _same_batches(a, b):
    for x, y in zip(a, b, strict=True):
        for key in ("rows", "tokens", "lengths", "global_feats", "spatial_feats"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key), err_msg=key)


def test_streamed_batches_equal_loaded_batches(ds):
    disk, memory = ds.features("grid"), ds.features("grid").in_memory()
    for depth in (0, 2):
        _same_batches(iterate_batches(ds, "train", disk, 32, seed=3, epoch=1, depth=depth),
                      iterate_batches(ds, "train", memory, 32, seed=3, epoch=1, depth=0))
        _same_batches(iterate_prefix_batches(ds, "train", disk, 32, seed=3, epoch=1, depth=depth),
                      iterate_prefix_batches(ds, "train", memory, 32, seed=3, epoch=1, depth=0))


@pytest.mark.parametrize("name", ["torch_show_attend_tell", "keras_show_attend_tell", "torch_concat", "keras_merge"])
def test_streamed_training_gives_the_same_losses_to_the_last_bit(ds, name):

    plugin = get_plugin(name)
    backend = backends.load(plugin.framework)
    hp = {k: v for k, v in SMALL.items() if k in plugin.defaults}
    losses = []
    for feats in (ds.features("grid"), ds.features("grid").in_memory()):
        runner = backend.Runner(plugin, ModelSpec.of(ds, feats), hp, seed=0, optim=OptimConfig(lr=3e-3))
        batches = iterate_batches(ds, "train", feats, 16, seed=0, epoch=0, pad_to_max=backend.FIXED_SHAPES)
        losses.append([runner.train_step(b) for _, b in zip(range(4), batches, strict=False)])
        g, s = feats.global_[np.arange(5)], feats.spatial[np.arange(5)]
        losses[-1].append(runner.greedy(g, s, ds.max_length).tolist())
    assert losses[0] == losses[1]


@pytest.mark.parametrize("name", ["torch_show_attend_tell", "keras_show_attend_tell", "torch_transformer",
                                  "keras_transformer", "torch_attention_lstm", "keras_attention_lstm",
                                  "torch_concat", "keras_merge"])
def test_a_model_that_declares_needs_global_false_never_reads_it(ds, name):
    """needs_global=False hands the model ZeroRows instead of the pooled vector, never read from the
    file: true only if the model's loss and captions do not depend on it (the merge models, which
    read it, are the control that shows this test can fail)."""

    plugin = get_plugin(name)
    backend = backends.load(plugin.framework)
    hp = {k: v for k, v in SMALL.items() if k in plugin.defaults}
    feats = ds.features("grid")
    blind = ds.features("grid", spatial=plugin.needs_spatial, global_=plugin.needs_global)
    assert isinstance(blind.global_, ZeroRows) != plugin.needs_global
    assert blind.global_.shape == feats.global_.shape
    assert blind.global_[np.arange(3)].shape == (3, feats.global_.shape[1])
    read = {"spatial": "float32"} if plugin.needs_spatial else {}
    assert blind.read_from_file() == (read if not plugin.needs_global else {"global": "float32", **read})
    results = []
    for global_ in (feats.global_, ZeroRows(feats.global_.shape)):
        f = Features("grid", global_, feats.spatial if plugin.needs_spatial else None)
        runner = backend.Runner(plugin, ModelSpec.of(ds, f), hp, seed=0, optim=OptimConfig(lr=3e-3))
        batches = list(zip(range(3), iterate_batches(ds, "val", f, 16, 0, 0, shuffle=False,
                                                     pad_to_max=backend.FIXED_SHAPES), strict=False))
        rows = np.arange(5)
        spatial = None if f.spatial is None else f.spatial[rows]
        results.append([runner.eval_loss(b for _, b in batches),
                        runner.greedy(f.global_[rows], spatial, ds.max_length).tolist()])
    assert (results[0] == results[1]) != plugin.needs_global


# float16 rounds each feature to 11 significant bits (relative error <= 2^-11): after a few Adam steps
# the losses of a model trained on them stay within this relative tolerance of the float32 ones
FLOAT16_LOSS_RTOL = 2e-3


def test_float16_storage_within_tolerance(small_dataset, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(small_dataset, half)
    with h5py.File(small_dataset / "features/grid.h5") as src, h5py.File(half / "features/grid.h5", "w") as dst:
        dst["image_ids"] = src["image_ids"][:]
        for key in ("global", "spatial"):
            dst.create_dataset(key, data=src[key][:].astype(np.float16), chunks=src[key].chunks)
    manifest = load_dataset(str(half), verify=False).manifest
    manifest["features"]["grid"]["dtype"] = "float16"
    finalize_manifest(half, manifest)
    full, reduced = load_dataset(str(small_dataset)), load_dataset(str(half))
    f32, f16 = full.features("grid"), reduced.features("grid")
    assert f16.spatial.stored_dtype == np.float16 and f16.spatial[np.arange(3)].dtype == np.float32
    np.testing.assert_allclose(f16.spatial[:], f32.spatial[:], rtol=2 ** -11, atol=2 ** -24)

    import backends.torch.runner as backend

    plugin = get_plugin("torch_show_attend_tell")
    hp = {k: v for k, v in SMALL.items() if k in plugin.defaults}
    losses = []
    for dataset, feats in ((full, f32), (reduced, f16)):
        runner = backend.Runner(plugin, ModelSpec.of(dataset, feats), hp, seed=0, optim=OptimConfig(lr=3e-3))
        batches = iterate_batches(dataset, "train", feats, 16, seed=0, epoch=0)
        losses.append([runner.train_step(b) for _, b in zip(range(5), batches, strict=False)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=FLOAT16_LOSS_RTOL)
    assert losses[1] != losses[0]  # the rounding is real: the test would notice float32 sneaking back


def test_prefetch_keeps_order_raises_where_the_producer_failed_and_stops_when_closed():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("disk gone")

    got = []
    with pytest.raises(ValueError, match="disk gone"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    before = {t.ident for t in threading.enumerate()}
    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name == "capbench-prefetch"]
    assert len(produced) <= 3 + 2 + 1  # taken, queued, and the one in hand when it stopped


def test_decoding_batches_are_sized_by_memory(ds):
    from benchmarks.run.worker.evaluate import (
        DECODE_BYTES,
        DECODE_COPIES,
        DECODE_MAX_IMAGES,
        DECODE_STATE_BYTES,
        decode_batch_images,
    )

    small = ds.features("grid")
    assert decode_batch_images(small, rows_per_image=3) == DECODE_MAX_IMAGES  # the embedded shapes: as before

    class Grid:  # Show, Attend and Tell's features, without the file
        def row_bytes(self):
            return (196 * 2048 + 2048) * 4

    images = decode_batch_images(Grid(), rows_per_image=3)
    assert 1 <= images < DECODE_MAX_IMAGES
    assert images * Grid().row_bytes() * 3 * DECODE_COPIES <= DECODE_BYTES
    assert decode_batch_images(Grid(), rows_per_image=1) > images
    # and by the decoder's state: Show, Attend and Tell's 159,744 bytes a row on the embedded set
    assert decode_batch_images(small, rows_per_image=5, state_bytes=159_744) == DECODE_STATE_BYTES // (159_744 * 5)
    assert decode_batch_images(small, rows_per_image=5, state_bytes=3_072) == DECODE_MAX_IMAGES  # torch_concat's


def test_random_dataset_passes_the_loaders_checks(tmp_path):
    opts = PrepareOptions(dataset="random", images="40", global_dim=16, grid="2x3x8", vocab=60,
                          feature_dtype="float16", data_dir=tmp_path)
    path = prepare(opts, log=lambda *_: None)
    assert path.name == "random-40-g16-2x3x8-v60-f16"
    ds = load_dataset(str(path))  # checksums, alignment, shapes, finiteness
    feats = ds.features("random")
    assert feats.global_.shape == (40, 16) and feats.spatial.shape == (40, 6, 8)
    assert feats.spatial.stored_dtype == np.float16
    values = feats.spatial[:]
    assert 0 <= values.min() and values.max() < 1 and values.std() > 0.2
    assert [len(ds.splits[s].image_ids) for s in ("train", "val", "test")] == [30, 5, 5]
    assert all(len(c) == 5 for c in ds.splits["train"].captions)
    words = [w for caps in ds.splits["train"].captions for c in caps for w in c]
    assert 5 < len(words) / (30 * 5) < 17  # Flickr8k-like caption lengths (mean 10.8)
    counts = np.sort(np.unique(words, return_counts=True)[1])[::-1]
    assert counts[0] > 5 * counts[len(counts) // 2]  # Zipf: the head is much more frequent than the middle
    batch = next(iter(iterate_batches(ds, "train", feats, 8, seed=0, epoch=0)))
    assert batch.spatial_feats.shape[1:] == (6, 8) and batch.tokens.max() < len(ds.vocab)
    # the same command reuses it; another shape under the same name is refused, not silently reused
    assert prepare(opts, log=lambda *_: None) == path
    from shared_data.errors import UserError

    other = PrepareOptions(dataset="random", images="40", global_dim=16, grid="2x3x8", vocab=60, seed=1,
                           feature_dtype="float16", data_dir=tmp_path, name=path.name)
    with pytest.raises(UserError, match="was prepared with seed 0, this command asks for 1"):
        prepare(other, log=lambda *_: None)


def test_a_contradicting_option_is_refused_and_defaults_are_not(small_dataset, tmp_path):
    from shared_data.errors import UserError

    copy = tmp_path / "synthetic-small"
    shutil.copytree(small_dataset, copy)
    for opts, message in ((PrepareOptions(size="small", extractor="grid", seed=3, data_dir=tmp_path),
                           "was prepared with seed 0, this command asks for 3"),
                          (PrepareOptions(size="small", extractor="grid", min_freq=5, data_dir=tmp_path),
                           "was prepared with min_freq 1, this command asks for 5"),
                          (PrepareOptions(size="small", extractor="grid", feature_dtype="float16", data_dir=tmp_path),
                           "'grid' features stored as float32, this command asks for float16")):
        with pytest.raises(UserError, match=message):
            prepare(opts, log=lambda *_: None)
    # the default size, seed and dtype contradict nothing: reusing (or adding features) just works
    assert prepare(PrepareOptions(name="synthetic-small", extractor="grid", data_dir=tmp_path),
                   log=lambda *_: None) == copy


@pytest.mark.parametrize("options, message", [
    ({"images": "abc"}, "--images abc: expected a whole number in [3, inf)"),
    ({"images": "2"}, "--images 2: expected a whole number in [3, inf)"),
    ({"vocab": "0"}, "--vocab 0: expected a whole number in [1, inf)"),
    ({"global_dim": "1.5"}, "--global-dim 1.5: expected a whole number"),
    ({"grid": "14x14"}, "--grid '14x14' is not HxWxC"),
    ({"feature_dtype": "bfloat16"}, "--feature-dtype 'bfloat16' is not one of: float32, float16"),
    ({"extractor": "grid"}, "--extractor does not apply to dataset random"),
])
def test_bad_random_options_are_refused_before_anything_is_written(tmp_path, options, message):
    from shared_data.errors import UserError

    with pytest.raises(UserError) as info:
        prepare(PrepareOptions(dataset="random", data_dir=tmp_path / "data", **options), log=lambda *_: None)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
