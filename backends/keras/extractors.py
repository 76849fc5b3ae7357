"""Keras CNN feature extractor: VGG16 fc2 (4096-d) image vectors for the Keras captioning models.

Follows the common Kaggle Keras captioning recipe: resize to 224x224, `vgg16.preprocess_input`
(RGB->BGR, ImageNet mean subtraction) and VGG16 with its top, cut at the "fc2" layer. ImageNet weights
are read from the file Keras itself caches (`$KERAS_HOME/models/`, default `~/.keras/models/`) and are
never downloaded here, so runs stay offline and a missing file is a clear error instead of a stall.

`vgg16_fc2(weights)` returns an extractor: uint8 RGB images [B, H, W, 3] of any size in,
(global [B, 4096] float32, None) out; VGG's fc2 has no spatial grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from shared_data.dataset_format import sha256_file
from shared_data.errors import UserError

VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_FILE


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file puts applications weights (its cache_subdir "models").

    Re-derived from the environment at call time: keras reads KERAS_HOME once at import, which would make
    the cache location untestable and ignore a KERAS_HOME set after keras was first imported.
    """
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK) and os.path.isdir(base):
        # get_file falls back to /tmp/.keras for a read-only cache dir, so the download landed there.
        base = "/tmp/.keras"
    return Path(base) / "models"


class KerasExtractor:
    """Callable: uint8 [B, H, W, 3] RGB -> (global [B, 4096] float32, None)."""

    def __init__(self, model: keras.Model, size: int = 224) -> None:
        self.model = model
        self.size = size

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [B, H, W, 3], got {images.dtype} {images.shape}")
        x = keras.ops.image.resize(
            images.astype("float32"), (self.size, self.size), interpolation="bilinear", antialias=True
        )
        return keras.applications.vgg16.preprocess_input(keras.ops.convert_to_numpy(x))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        out = self.model(self.preprocess(images), training=False)
        return keras.ops.convert_to_numpy(out).astype(np.float32), None


def vgg16_fc2(weights: str) -> KerasExtractor:
    """VGG16 up to fc2; weights is "imagenet" (Keras' cached file), "none" (seeded random) or an .h5 path."""
    if weights == "imagenet":
        cache = keras_cache_dir()
        path = cache / VGG16_FILE
        if not path.is_file():
            raise UserError(
                f"vgg16 ImageNet weights not found: put {VGG16_FILE} (Keras downloads it from {VGG16_URL}) "
                f"in {cache}/, or pass --weights none for random weights (testing only)"
            )
    elif weights != "none":
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"vgg16 weights file {path} does not exist (use imagenet, none or an .h5 path)")
    keras.utils.set_random_seed(0)
    full = keras.applications.VGG16(include_top=True, weights=None)
    if weights != "none":
        try:
            # The file covers the whole network, predictions layer included, so load before cutting.
            full.load_weights(path)
        except Exception as e:  # h5py/keras raise OSError, ValueError, KeyError for bad files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"vgg16 weights file {path} does not fit VGG16 with top: {msg}") from e
    extractor = KerasExtractor(keras.Model(full.input, full.get_layer("fc2").output, name="vgg16_fc2"))
    extractor.weights_sha256 = "none" if weights == "none" else sha256_file(path)  # recorded in the manifest
    return extractor
