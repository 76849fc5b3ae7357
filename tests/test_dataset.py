"""The data contract: vocabulary rules, what load_dataset accepts and what it refuses."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from shared_data.dataset import SCHEMA_VERSION, load_dataset
from shared_data.dataset_format import MAX_CAPTION_WORDS
from shared_data.dataset_writing import finalize_manifest, write_text_files
from shared_data.errors import UserError
from shared_data.features import UnsafeH5, open_h5
from shared_data.safe_paths import path_problem
from shared_data.sources import Source, SourceImage
from shared_data.text import SPECIALS, Vocab, tokenize


def test_tokenize_is_the_same_for_every_source():
    assert tokenize("A red, Circle!  on the LEFT-side") == ["a", "red", "circle", "on", "the", "left", "side"]
    assert tokenize("  ") == []


def test_vocab_specials_and_order():
    v = Vocab.build([["b", "a", "b"], ["c", "b", "a"]])
    assert v.itos[:4] == list(SPECIALS) and v.pad_id == 0 and v.stoi["<pad>"] == 0
    assert v.itos[4:] == ["b", "a", "c"]  # by frequency, ties alphabetical
    assert v.encode(["a", "zzz"]) == [v.start_id, v.stoi["a"], v.unk_id, v.end_id]
    assert v.decode([v.start_id, v.stoi["c"], v.end_id, v.stoi["a"]]) == ["c"]
    assert Vocab.from_json(v.to_json()) == v


def test_vocab_min_freq():
    caps = [["x"] * 5, ["y"] * 4, ["z"]]
    assert Vocab.build(caps, min_freq=1).itos[4:] == ["x", "y", "z"]
    assert Vocab.build(caps, min_freq=5).itos[4:] == ["x"]


def _source(tmp_path, train_words="a red circle", test_words="a blue moon"):
    images = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        text = test_words if split == "test" else train_words
        images.append(SourceImage(f"im{i}.jpg", split, [text, text.upper() + "!"], tmp_path / f"im{i}.jpg"))
    return Source("handmade", images)


def test_vocabulary_comes_from_train_only(tmp_path):
    m = write_text_files(_source(tmp_path), tmp_path, "d", tmp_path, min_freq=1)
    vocab = json.loads((tmp_path / "vocab.json").read_text())["itos"]
    assert "red" in vocab and "blue" not in vocab and "moon" not in vocab
    assert m["vocab"]["unk_rate_test"] > 0
    assert m["max_length"] == 3 + 2
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert captions["train"][0]["captions"] == ["a red circle", "a red circle"]  # lowercased, no punctuation


def test_empty_split_is_refused(tmp_path):
    src = _source(tmp_path)
    src.images = [im for im in src.images if im.split != "val"]
    with pytest.raises(UserError, match="val"):
        write_text_files(src, tmp_path, "d", tmp_path)


def test_an_image_without_captions_is_refused_at_prepare(tmp_path):
    src = _source(tmp_path)
    src.images[3].captions = []
    with pytest.raises(UserError, match=r"image im3.jpg \(test\) has no captions"):
        write_text_files(src, tmp_path, "d", tmp_path)


def test_long_captions_are_cut_and_counted(tmp_path):
    m = write_text_files(_source(tmp_path, train_words="dog " * 500), tmp_path, "d", tmp_path)
    assert m["max_length"] == MAX_CAPTION_WORDS + 2
    assert m["warnings"][0] == f"6 caption(s) longer than {MAX_CAPTION_WORDS} words were cut to {MAX_CAPTION_WORDS}"


def test_a_valid_dataset_has_no_bound_warnings(small_dataset):
    """The bounds leave a real dataset's manifest as it was: its identity (and every run's
    configuration hash) does not move."""
    assert json.loads((small_dataset / "manifest.json").read_text())["warnings"] == []


@pytest.mark.parametrize("rel, ok", [("a.jpg", True), ("train2014/a.jpg", True), ("/a.jpg", False),
                                     ("../a.jpg", False), ("a/../b.jpg", False), ("a//b.jpg", False),
                                     ("./a.jpg", False), ("", False), ("a\\b.jpg", False)])
def test_plain_relative_paths(rel, ok):
    assert (path_problem(rel) is None) == ok


def test_a_linked_dataset_folder_loads(small_dataset, tmp_path):
    """The dataset folder may be a link (a large dataset on another disk); what is inside may not lead out."""
    (tmp_path / "linked").symlink_to(small_dataset)
    ds = load_dataset("linked", tmp_path)
    assert ds.features("grid").global_.shape == (400, 192)
    assert ds.image_path(ds.splits["train"].image_ids[0]).is_file()


def test_open_h5_refuses_a_dataset_stored_elsewhere(tmp_path):
    (tmp_path / "rows.bin").write_bytes(bytes(16))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("global", shape=(2, 2), dtype="float32", external=[(str(tmp_path / "rows.bin"), 0, 16)])
    with pytest.raises(UnsafeH5, match="'global' keeps its rows in an external file"):
        open_h5(tmp_path / "f.h5")


def test_small_dataset_loads(small_dataset):
    ds = load_dataset(str(small_dataset))
    assert [len(ds.splits[s].image_ids) for s in ("train", "val", "test")] == [300, 50, 50]
    assert all(len(c) == 5 for c in ds.splits["train"].captions)
    f = ds.features("grid")
    assert f.global_.shape == (400, 192) and f.spatial.shape == (400, 64, 32)
    assert ds.manifest["schema_version"] == SCHEMA_VERSION
    assert len(ds.vocab) == ds.manifest["vocab"]["size"] >= 150
    objects = ds.objects()
    first = ds.splits["train"].image_ids[0]
    assert {"shape", "colour", "size", "x", "y", "bbox"} <= set(objects[first]["objects"][0])
    assert (ds.image_dir / first).exists()


@pytest.fixture
def copy_of(small_dataset, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_dataset, dst)
    return dst


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_missing_dataset_names_prepare_command(tmp_path):
    with pytest.raises(UserError, match="python -m benchmarks prepare --size small"):
        load_dataset("synthetic-small", data_dir=tmp_path)


def test_older_schema_is_refused(copy_of):
    m = _manifest(copy_of)
    m["schema_version"] = 0
    (copy_of / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="schema version 0.*delete"):
        load_dataset(str(copy_of))


def test_checksum_catches_corruption_and_no_verify_skips_it(copy_of):
    captions = json.loads((copy_of / "captions.json").read_text())
    captions["train"][0]["captions"][0] = "a tampered caption"
    (copy_of / "captions.json").write_text(json.dumps(captions))
    with pytest.raises(UserError, match=r"captions.json does not match its sha256.*--no-verify"):
        load_dataset(str(copy_of))
    assert load_dataset(str(copy_of), verify=False).splits["train"].captions[0][0][1] == "tampered"


def test_feature_corruption_is_detected(copy_of):
    with h5py.File(copy_of / "features/grid.h5", "r+") as f:
        f["global"][3, 0] = 123.0
    with pytest.raises(UserError, match="grid.h5 does not match its sha256"):
        load_dataset(str(copy_of)).features("grid")


def _rewrite_features(path, **changes):
    """Change the feature file and re-hash it, so that only the semantic checks can catch it."""
    with h5py.File(path / "features/grid.h5", "r+") as f:
        for key, value in changes.items():
            del f[key]
            f[key] = value
    finalize_manifest(path, _manifest(path))


def test_nan_features_are_refused(copy_of):
    g = load_dataset(str(copy_of)).features("grid").global_[:]
    g[5, 2] = np.nan
    _rewrite_features(copy_of, **{"global": g})
    with pytest.raises(UserError, match="NaN or inf"):
        load_dataset(str(copy_of)).features("grid")


def test_misaligned_features_are_refused(copy_of):
    ids = [i.decode() for i in h5py.File(copy_of / "features/grid.h5", "r")["image_ids"][:]]
    ids[0], ids[1] = ids[1], ids[0]
    _rewrite_features(copy_of, image_ids=np.array(ids, dtype=h5py.string_dtype()))
    with pytest.raises(UserError, match="not aligned with captions.json .*row 0"):
        load_dataset(str(copy_of)).features("grid")


def test_wrong_dimensions_are_refused(copy_of):
    g = load_dataset(str(copy_of)).features("grid").global_[:]
    _rewrite_features(copy_of, **{"global": g[:, :100]})
    with pytest.raises(UserError, match=r"global features are \(100,\), the manifest says \[192\]"):
        load_dataset(str(copy_of)).features("grid")


def test_unknown_extractor_says_how_to_add_it(small_dataset):
    with pytest.raises(UserError, match="--extractor resnet101"):
        load_dataset(str(small_dataset)).features("resnet101")


def test_missing_file_is_named(copy_of):
    (copy_of / "vocab.json").unlink()
    with pytest.raises(UserError, match="vocab.json is missing"):
        load_dataset(str(copy_of))


def test_identity_ignores_feature_bytes_and_paths_but_not_weights(small_dataset):
    """Another CPU's float32 kernels give features with other last bits, and another machine keeps its
    images elsewhere: the same dataset. Other extractor weights or other captions: another dataset."""
    from shared_data.dataset_format import dataset_identity

    manifest = json.loads((small_dataset / "manifest.json").read_text())
    same = json.loads(json.dumps(manifest))
    for f in same["files"]:
        if f.startswith("features/"):
            same["files"][f] = "0" * 64
    same["prepare"] = {**same["prepare"], "images": "/elsewhere/Images"}
    assert dataset_identity(same) == dataset_identity(manifest)
    extractor = next(iter(manifest["features"]))
    other_weights = json.loads(json.dumps(manifest))
    other_weights["features"][extractor]["weights_sha256"] = "f" * 64
    other_captions = json.loads(json.dumps(manifest))
    other_captions["files"]["captions.json"] = "0" * 64
    assert len({dataset_identity(m) for m in (manifest, other_weights, other_captions)}) == 3
