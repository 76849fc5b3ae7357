"""`synthnet`, the embedded dataset's pretrained-CNN stand-in: labels from exact object masks, the
shipped weights checked by their sha256, the pretraining script, features of the documented shapes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends.torch import synthnet as sn  # noqa: E402
from shared_data import synthetic, synthetic_scene  # noqa: E402
from shared_data.dataset import sha256_file  # noqa: E402
from shared_data.errors import UserError  # noqa: E402


def test_cell_labels_follow_the_object_masks():
    square = synthetic_scene.SceneObject("square", "red", "large", x=40.0, y=40.0, radius=24.0, depth=0,
                                   bbox=(16.0, 16.0, 64.0, 64.0))
    star = synthetic_scene.SceneObject("star", "blue", "small", x=104.0, y=104.0, radius=9.0, depth=1,
                                 bbox=(95.0, 95.0, 113.0, 113.0))
    labels = sn.cell_labels(synthetic.Scene([square, star], "plain", "beige", 0))
    assert labels.shape == (3, 8, 8)
    shape, colour, size = labels
    # the square spans x, y in [19.6, 60.4]: cells 1..3 are fully inside, cell 0 not at all
    assert (shape[1:4, 1:4] == sn.SHAPES.index("square")).all() and (colour[1:4, 1:4] == sn.COLOURS.index("red")).all()
    assert (size[1:4, 1:4] == sn.SIZES.index("large")).all()
    assert shape[0, 0] == len(sn.SHAPES) and colour[7, 0] == len(sn.COLOURS)  # "none"
    assert shape[6, 6] == sn.SHAPES.index("star")  # the star's centre cell (96..112)


def test_shipped_weights_give_features_of_the_documented_shapes():
    extract = sn.synthnet("imagenet")
    assert extract.weights_sha256 == sn.SHIPPED_SHA256 == sha256_file(sn.SHIPPED_WEIGHTS)
    images = np.stack([np.asarray(synthetic.generate_image(0, i)[0]) for i in range(3)])
    g, s = extract(images)
    assert g.shape == (3, 192) and s.shape == (3, 64, 96) and g.dtype == s.dtype == np.float32
    np.testing.assert_allclose(g[:, :96], s.mean(1), rtol=1e-6, atol=1e-6)  # mean half of the global vector
    np.testing.assert_array_equal(g[:, 96:], s.max(1))
    with pytest.raises(ValueError, match="128px RGB"):
        extract(images[:, :64])


def test_tampered_or_missing_weights_are_refused(tmp_path, monkeypatch):
    tampered = tmp_path / "synthnet.safetensors"
    data = bytearray(sn.SHIPPED_WEIGHTS.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(sn, "SHIPPED_WEIGHTS", tampered)
    with pytest.raises(UserError, match="is not the shipped synthnet weights"):
        sn.synthnet("imagenet")
    with pytest.raises(UserError, match="does not exist"):
        sn.synthnet(str(tmp_path / "missing.safetensors"))
    not_weights = tmp_path / "x.safetensors"
    not_weights.write_text("hello")
    with pytest.raises(UserError, match="is not a synthnet safetensors file"):
        sn.synthnet(str(not_weights))


def test_the_pretraining_script_writes_loadable_weights(tmp_path, monkeypatch, capsys):
    """`python -m backends.torch.synthnet OUT` reruns the pretraining (here shrunk to 24 images, one epoch)."""
    monkeypatch.setitem(sn.SETTINGS, "images", 24)
    monkeypatch.setitem(sn.SETTINGS, "epochs", 1)
    out = tmp_path / "w.safetensors"
    assert sn.main([str(out)]) == 0
    assert f"sha256 {sha256_file(out)}, not the shipped file's" in capsys.readouterr().out
    extract = sn.synthnet(str(out))
    assert extract.weights_sha256 == sha256_file(out)
    images = np.stack([np.asarray(synthetic.generate_image(0, 0)[0])])
    assert not np.array_equal(extract(images)[1], sn.synthnet("imagenet")(images)[1])
