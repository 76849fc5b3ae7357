"""`synthnet`, the embedded dataset's pretrained-CNN stand-in: labels from exact object masks,
pretraining cached by its settings, features of the documented shapes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends.torch import synthnet as sn  # noqa: E402
from shared_data import synthetic  # noqa: E402


def test_cell_labels_follow_the_object_masks():
    square = synthetic.SceneObject("square", "red", "large", x=40.0, y=40.0, radius=24.0, depth=0,
                                   bbox=(16.0, 16.0, 64.0, 64.0))
    star = synthetic.SceneObject("star", "blue", "small", x=104.0, y=104.0, radius=9.0, depth=1,
                                 bbox=(95.0, 95.0, 113.0, 113.0))
    labels = sn.cell_labels(synthetic.Scene([square, star], "plain", "beige", 0))
    assert labels.shape == (3, 8, 8)
    shape, colour, size = labels
    # the square spans x, y in [19.6, 60.4]: cells 1..3 are fully inside, cell 0 not at all
    assert (shape[1:4, 1:4] == sn.SHAPES.index("square")).all() and (colour[1:4, 1:4] == sn.COLOURS.index("red")).all()
    assert (size[1:4, 1:4] == sn.SIZES.index("large")).all()
    assert shape[0, 0] == len(sn.SHAPES) and colour[7, 0] == len(sn.COLOURS)  # "none"
    assert shape[6, 6] == sn.SHAPES.index("star")  # the star's centre cell (96..112)


def test_pretraining_is_cached_and_features_have_the_documented_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPBENCH_CACHE", str(tmp_path))
    monkeypatch.setitem(sn.SETTINGS, "images", 24)
    monkeypatch.setitem(sn.SETTINGS, "epochs", 1)
    logs = []
    first = sn.synthnet("imagenet", log=logs.append)
    assert sn.cache_path().exists() and any("pretraining on 24 generated images" in m for m in logs)
    images = np.stack([np.asarray(synthetic.generate_image(0, i)[0]) for i in range(3)])
    g, s = first(images)
    assert g.shape == (3, 192) and s.shape == (3, 64, 96) and g.dtype == s.dtype == np.float32
    np.testing.assert_allclose(g[:, :96], s.mean(1), rtol=1e-6, atol=1e-6)  # mean half of the global vector
    logs.clear()
    again = sn.synthnet("imagenet", log=logs.append)  # loaded from the cache, not trained again
    assert not logs
    np.testing.assert_allclose(again(images)[0], g, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="128px RGB"):
        first(images[:, :64])
