"""prepare / list / export through the CLI, the importers end to end, and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from benchmarks.cli import main
from benchmarks.data.options import PrepareOptions
from benchmarks.data.prepare import prepare
from shared_data import features as features_mod
from shared_data.dataset import load_dataset


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("prepare", "list", "run", "report"):
        assert cmd in out


def test_report_of_a_missing_study(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", tmp_path / "nothing")
    assert code == 2 and "is not a study folder" in err and "Traceback" not in err


def test_second_prepare_reuses(capsys, small_dataset, data_dir):
    before = (small_dataset / "manifest.json").read_text()
    code, out, _ = run_cli(capsys, "prepare", "--size", "small", "--extractor", "grid", "--data-dir", data_dir)
    assert code == 0 and "reusing" in out
    assert (small_dataset / "manifest.json").read_text() == before


def test_list_shows_datasets_and_extractors(capsys, small_dataset, data_dir):
    code, out, _ = run_cli(capsys, "list", "--data-dir", data_dir)
    assert code == 0
    assert "synthetic-small" in out and "300/50/50" in out
    for name in ("grid", "synthnet", "vgg16_fc2", "resnet101", "regnetx400mf"):
        assert name in out
    code, out, _ = run_cli(capsys, "list", "--data-dir", data_dir, "--dataset", "synthetic-small")
    D, V = 192, len(load_dataset(str(small_dataset)).vocab)  # measured counts equal the closed forms
    assert f"{256 * D + 256 + 513 * V + 591_104:,}" in out.split("keras_merge")[1].splitlines()[0]
    assert f"{256 * D + 256 + 513 * V + 657_664:,}" in out.split("torch_concat")[1].splitlines()[0]


def test_flickr8k_round_trip(capsys, small_dataset, data_dir, tmp_path):
    """Export the embedded dataset in Kaggle's layout, import it as Flickr8k: same captions and vocab."""
    code, _, err = run_cli(capsys, "export", tmp_path / "kaggle", "--dataset", "synthetic-small",
                           "--data-dir", data_dir)
    assert code == 0, err
    assert (tmp_path / "kaggle/captions.txt").read_text().splitlines()[0] == "image,caption"
    code, _, err = run_cli(capsys, "prepare", "flickr8k", "--images", tmp_path / "kaggle",
                           "--name", "f8k", "--data-dir", tmp_path / "dd")
    assert code == 0, err
    a, b = load_dataset(str(small_dataset)), load_dataset("f8k", data_dir=tmp_path / "dd")
    assert a.vocab == b.vocab
    for s in ("train", "val", "test"):
        assert a.splits[s].image_ids == b.splits[s].image_ids
        assert a.splits[s].captions == b.splits[s].captions
    # features come from the JPEG files in both cases, so they agree too
    np.testing.assert_allclose(a.features("grid").global_, b.features("grid").global_, atol=1e-6)
    assert b.manifest["source"]["kind"] == "flickr8k"


def _tiny_images(folder: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), (40 * k) % 256, np.uint8)).save(folder / name)


def test_karpathy_json_with_image_folder(capsys, tmp_path):
    entries = []
    for k, split in enumerate(["train", "restval", "val", "test"]):
        entries.append({"filepath": "train2014", "filename": f"img{k}.jpg", "split": split,
                        "sentences": [{"raw": f"A dog number {k}.", "tokens": []},
                                      {"raw": "Two cats on a mat", "tokens": []}]})
    _tiny_images(tmp_path / "coco", [f"train2014/img{k}.jpg" for k in range(4)])
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": entries}))
    code, out, err = run_cli(capsys, "prepare", "karpathy", "--karpathy-json", tmp_path / "dataset_coco.json",
                             "--images", tmp_path / "coco", "--data-dir", tmp_path / "dd")
    assert code == 0, err
    ds = load_dataset("karpathy-coco", data_dir=tmp_path / "dd")
    assert ds.splits["train"].image_ids == ["train2014/img0.jpg", "train2014/img1.jpg"]  # restval -> train
    assert ds.splits["test"].captions[0][0] == ["a", "dog", "number", "3"]
    assert "3" not in ds.vocab.stoi and "1" in ds.vocab.stoi  # train words only


def test_undecodable_image_is_skipped_and_counted(capsys, tmp_path):
    root = tmp_path / "f8k"
    names = [f"{k}.jpg" for k in range(16)]
    _tiny_images(root / "Images", names)
    (root / "Images/5.jpg").write_bytes(b"not a jpeg")
    (root / "captions.txt").write_text("image,caption\n" + "".join(f"{n},a picture {n}\n" for n in names))
    code, out, err = run_cli(capsys, "prepare", "flickr8k", "--images", root, "--data-dir", tmp_path / "dd")
    assert code == 0, err
    assert "1 image(s) could not be decoded and were skipped" in out
    ds = load_dataset("flickr8k", data_dir=tmp_path / "dd")
    assert sum(len(s.image_ids) for s in ds.splits.values()) == 15
    assert any("could not be decoded" in w for w in ds.manifest["warnings"])


@pytest.mark.parametrize("argv, message", [
    (["prepare", "imagenet"], "unknown dataset 'imagenet'; choose one of: synthetic, flickr8k, karpathy"),
    (["prepare", "--extractor", "clip"], "unknown extractor 'clip'; choose one of: grid"),
    (["prepare", "--size", "huge"], "unknown size 'huge'"),
    (["prepare", "flickr8k"], "needs --images DIR"),
    (["prepare", "flickr8k", "--images", "/nonexistent/images"], "--images /nonexistent/images: no such directory"),
    (["prepare", "karpathy", "--images", "/tmp"], "needs --karpathy-json"),
    (["prepare", "--min-freq", "0"], "--min-freq must be at least 1"),
])
def test_bad_prepare_input_is_one_line(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, "--data-dir", tmp_path / "dd")
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "dd" / "synthetic").exists()


def test_unwritable_data_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "prepare", "--size", "small", "--data-dir", blocker / "sub")
    assert code == 2 and "is not writable" in err and "--data-dir" in err


def test_missing_dataset_for_export(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", tmp_path / "out", "--data-dir", tmp_path)
    assert code == 2 and "python -m benchmarks prepare" in err


def test_interrupted_prepare_leaves_no_dataset_and_resumes(tmp_path, small_dataset, monkeypatch):
    calls = {"n": 0}
    real = features_mod.load_image

    def flaky(path, size):
        calls["n"] += 1
        if calls["n"] == 150:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(features_mod, "load_image", flaky)
    opts = PrepareOptions(size="small", extractor="grid", data_dir=tmp_path, batch_size=32)
    with pytest.raises(KeyboardInterrupt):
        prepare(opts, log=lambda *_: None)
    assert not (tmp_path / "synthetic-small").exists()
    partial = tmp_path / ".synthetic-small.partial/features/grid.h5.partial"
    with h5py.File(partial, "r") as f:
        assert f.attrs["done"] == 128  # four whole batches survived
    monkeypatch.setattr(features_mod, "load_image", real)
    prepare(opts, log=lambda *_: None)
    a, b = load_dataset(str(small_dataset)), load_dataset("synthetic-small", data_dir=tmp_path)
    assert a.manifest["files"] == b.manifest["files"]  # resumed build is byte-identical
    assert not (tmp_path / ".synthetic-small.partial").exists()


def test_default_extractor_is_synthnet_on_the_embedded_dataset_only():
    from benchmarks.data.extractors import default_extractor

    assert default_extractor("synthetic") == "synthnet"
    assert default_extractor("flickr8k") == default_extractor("karpathy") == "grid"


def test_adding_an_extractor_keeps_the_rest(tmp_path, small_dataset, monkeypatch):
    import benchmarks.data.extractors as ex

    shutil.copytree(small_dataset, tmp_path / "synthetic-small")
    fake = ex.ExtractorSpec("grid2", "numpy", 128, "shared_data.grid:extract", "a copy of grid",
                            needs_weights=False)
    monkeypatch.setitem(ex.EXTRACTORS, "grid2", fake)
    prepare(PrepareOptions(size="small", extractor="grid2", data_dir=tmp_path), log=lambda *_: None)
    ds = load_dataset("synthetic-small", data_dir=tmp_path)
    assert ds.extractors == ["grid", "grid2"] and ds.default_extractor == "grid"  # the one it was prepared with
    np.testing.assert_array_equal(ds.features("grid").spatial, ds.features("grid2").spatial)
    assert ds.manifest["files"]["captions.json"] == load_dataset(str(small_dataset)).manifest["files"]["captions.json"]
