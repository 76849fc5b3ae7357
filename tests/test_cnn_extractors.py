"""CNN feature extractors: shapes, determinism, weight loading from the library caches, error messages.

Everything runs on random weights (`weights="none"`) and fake caches under tmp_path: nothing is
downloaded. The torchvision comparison runs only where torchvision imports (a CUDA torch install).
"""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import keras
import numpy as np
import pytest
import torch

from backends.keras import extractors as kx
from backends.torch import extractors as tx
from shared_data.errors import UserError

# Tiny and non-square, so the resize and the fixed output grids are both exercised.
IMAGES = np.random.default_rng(0).integers(0, 256, size=(2, 40, 52, 3), dtype=np.uint8)

TORCH_ARCHS = {
    # name: (builder, torchvision checkpoint file, channels, spatial positions, torchvision constructor)
    "resnet101": (tx.resnet101, tx.RESNET101_FILE, 2048, 196, "resnet101"),
    "regnetx400mf": (tx.regnetx400mf, tx.REGNETX400MF_FILE, 400, 16, "regnet_x_400mf"),
}


def _check_outputs(global_, spatial, dim, positions):
    assert global_.shape == (2, dim) and global_.dtype == np.float32
    assert np.isfinite(global_).all()
    if positions is None:
        assert spatial is None
    else:
        assert spatial.shape == (2, positions, dim) and spatial.dtype == np.float32
        assert np.isfinite(spatial).all()
        np.testing.assert_allclose(global_, spatial.mean(axis=1), rtol=1e-5, atol=1e-5)


# --- torch ---


@pytest.fixture(scope="module", params=list(TORCH_ARCHS))
def torch_arch(request):
    build, file_name, dim, positions, tv_name = TORCH_ARCHS[request.param]
    ext = build("none")
    return SimpleNamespace(
        name=request.param,
        build=build,
        file_name=file_name,
        dim=dim,
        positions=positions,
        tv_name=tv_name,
        ext=ext,
        out=ext(IMAGES),
    )


def test_torch_shapes_and_values(torch_arch):
    _check_outputs(*torch_arch.out, torch_arch.dim, torch_arch.positions)


def test_torch_deterministic(torch_arch):
    again = torch_arch.build("none")(IMAGES)
    for a, b in zip(torch_arch.out, again, strict=True):
        np.testing.assert_array_equal(a, b)


def _perturbed_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Different from the seed-0 init, so a load that silently did nothing cannot pass.
    gen = torch.Generator().manual_seed(1)
    return {
        k: v * (0.5 + torch.rand(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def test_torch_imagenet_from_cache(torch_arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    ref = torch_arch.build("none")
    ref.model.load_state_dict(_perturbed_state(ref.model))
    expected = ref(IMAGES)
    # A real torchvision checkpoint carries the classifier too; the trunk must skip it.
    state = {k: v.cpu() for k, v in ref.model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, torch_arch.dim)
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, cache / torch_arch.file_name)

    got = torch_arch.build("imagenet")(IMAGES)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[0], torch_arch.out[0])


def test_torch_missing_cache(torch_arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        torch_arch.build("imagenet")
    msg = str(err.value)
    assert torch_arch.file_name in msg and "--weights none" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/" + torch_arch.file_name in msg
    assert "\n" not in msg


def test_torch_bad_weights_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        tx.regnetx400mf(str(tmp_path / "nope.pth"))

    state = tx.RegNetX400MFTrunk().state_dict()
    del state["stem.0.weight"]
    state["trunk_output.block1.block1-0.f.a.0.weight"] = torch.zeros(1, 1, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(UserError) as err:
        tx.regnetx400mf(str(bad))
    msg = str(err.value)
    assert "missing stem.0.weight" in msg and "unexpected extra.weight" in msg and "block1-0.f.a" in msg
    assert "\n" not in msg

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch state dict"):
        tx.regnetx400mf(str(garbage))


_torchvision_error: str | None = None


def _torchvision_models():
    global _torchvision_error
    if _torchvision_error is None:
        try:
            import torchvision.models  # noqa: F401
        except Exception as e:  # the CUDA wheel raises RuntimeError, not ImportError, on CPU torch
            _torchvision_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            _torchvision_error = ""
    if _torchvision_error:
        pytest.skip(f"torchvision cannot be imported here ({_torchvision_error}); the comparison needs it")
    import torchvision.models

    return torchvision.models


def test_matches_torchvision(torch_arch, tmp_path):
    models = _torchvision_models()
    torch.manual_seed(1)
    tv = getattr(models, torch_arch.tv_name)(weights=None).eval()
    ours = {k: tuple(v.shape) for k, v in torch_arch.ext.model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert list(ours.items()) == list(theirs.items())

    # Non-trivial BN statistics, so the comparison covers them as well as the convolutions.
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    ext = torch_arch.build(str(path))
    global_, spatial = ext(IMAGES)
    with torch.inference_mode():
        trunk = torch.nn.Sequential(*list(tv.children())[:-2]).to(ext.device)  # drop avgpool, fc
        fmap = ext.pool(trunk(ext.preprocess(IMAGES)))
        expected = fmap.flatten(2).transpose(1, 2).cpu().numpy()
    np.testing.assert_allclose(spatial, expected, rtol=1e-4, atol=1e-5)


# --- keras ---


@pytest.fixture(scope="module")
def vgg():
    ext = kx.vgg16_fc2("none")
    return SimpleNamespace(ext=ext, out=ext(IMAGES))


def test_vgg_shapes_and_values(vgg):
    _check_outputs(*vgg.out, 4096, None)


@pytest.mark.slow
def test_vgg_deterministic(vgg):
    np.testing.assert_array_equal(kx.vgg16_fc2("none")(IMAGES)[0], vgg.out[0])


def _save_applications_h5(model: keras.Model, path) -> None:
    """Write weights in the layout of Keras' published applications .h5 files (layer_names + groups)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode()
        for layer in model.layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0" for w in weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, weights, strict=True):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(w))


@pytest.mark.slow
def test_vgg_imagenet_from_cache(vgg, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    # Seed 1, not the extractor's seed 0, so a load that silently did nothing cannot pass.
    keras.utils.set_random_seed(1)
    full = keras.applications.VGG16(include_top=True, weights=None)
    _save_applications_h5(full, tmp_path / "models" / kx.VGG16_FILE)
    ref = kx.KerasExtractor(keras.Model(full.input, full.get_layer("fc2").output))
    expected = ref(IMAGES)[0]
    del full, ref

    got, spatial = kx.vgg16_fc2("imagenet")(IMAGES)
    assert spatial is None
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, vgg.out[0])


def test_vgg_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        kx.vgg16_fc2("imagenet")
    msg = str(err.value)
    assert kx.VGG16_FILE in msg and "--weights none" in msg
    assert str(tmp_path / "models") in msg and kx.VGG16_URL in msg
    assert "\n" not in msg


def test_vgg_bad_weights_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        kx.vgg16_fc2(str(tmp_path / "nope.h5"))
