"""The Keras side of the training protocol, through Keras' own compile/train_on_batch, so that it
runs unchanged on the TensorFlow, JAX and torch Keras backends.

A plugin with its own regulariser (attention's doubly stochastic term, EOS suppression) adds it
with `self.add_loss(...)` inside `call` when `training` is true: train_on_batch then optimises and
returns CE + aux, test_on_batch (training off) returns CE alone, as the torch backend does."""

from __future__ import annotations

import keras
import numpy as np

from backends.common import OptimConfig
from shared_data.batches import Batch


def compile_model(model: keras.Model, cfg: OptimConfig, jit_compile: bool = False) -> None:
    opt = keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps,
                                global_clipnorm=cfg.clip_norm)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    model.compile(optimizer=opt, loss=loss, jit_compile=jit_compile)
    # slots are zeros either way; built now, the first train_on_batch traces the step once, not twice
    model.optimizer.build(model.trainable_variables)


def inputs(batch: Batch) -> dict:
    x = {"global": batch.global_feats, "tokens": batch.inputs}
    if batch.spatial_feats is not None:
        x["spatial"] = batch.spatial_feats
    return x


def train_step(model: keras.Model, batch: Batch) -> float:
    return float(model.train_on_batch(inputs(batch), batch.targets, sample_weight=batch.mask))


def eval_loss(model: keras.Model, batches) -> float:
    total = tokens = 0.0
    for b in batches:
        n = b.num_tokens
        total += float(model.test_on_batch(inputs(b), b.targets, sample_weight=b.mask)) * n
        tokens += n
    return total / max(tokens, 1)


def to_numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)
