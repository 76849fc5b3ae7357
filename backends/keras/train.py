"""The Keras side of the training protocol, through Keras' own compile/train_on_batch, so that it
runs unchanged on the TensorFlow, JAX and torch Keras backends.

A plugin with its own regulariser (attention's doubly stochastic term, EOS suppression) adds it
with `self.add_loss(...)` inside `call` when `training` is true: train_on_batch then optimises and
returns CE + aux, test_on_batch (training off) returns CE alone, as the torch backend does."""

from __future__ import annotations

import keras

from backends.common import OptimConfig
from shared_data.batches import Batch, PrefixBatch, to_width


def _jit_compile(compile: bool) -> bool:
    """Keras' jit_compile for `--compile` on the engine in use.

    TensorFlow: off is its graph mode (tf.function), on is XLA. PyTorch: off is eager, on is
    torch.compile. JAX has no uncompiled graph mode: its default execution, and Keras' own "auto" there,
    is jax.jit (XLA), and with jit_compile=False Keras runs the step op by op, each op dispatched and
    compiled on its own (keras_merge: 781 against 91 ms a step on the 2-core development CPU). So on
    JAX the step is always jitted, and --compile changes nothing."""
    return True if keras.backend.backend() == "jax" else compile


def compile_model(model: keras.Model, cfg: OptimConfig, compile: bool = False) -> None:
    opt = keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps,
                                global_clipnorm=cfg.clip_norm)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    model.compile(optimizer=opt, loss=loss, jit_compile=_jit_compile(compile))
    # slots are zeros either way; built now, the first train_on_batch traces the step once, not twice
    model.optimizer.build(model.trainable_variables)


def inputs(batch: Batch) -> dict:
    x = {"global": batch.global_feats, "tokens": batch.inputs}
    if batch.spatial_feats is not None:
        x["spatial"] = batch.spatial_feats
    return x


def cut_to_longest(model: keras.Model, batch: Batch) -> Batch:
    """The batch cut to its longest caption where a new length costs this engine nothing.

    The harness pads a Keras batch to max_length (FIXED_SHAPES), because a compiler that specialises
    on shapes (XLA: JAX, TensorFlow with jit_compile) builds one program per length. TensorFlow's graph
    mode does not: its train function relaxes to a length-agnostic trace after a second length, and
    Keras on PyTorch is eager. There the trailing pads are dropped, as PyTorch's batches drop them
    (keras_merge on the embedded dataset: 31.4 positions a batch on average instead of 36; the README's
    "what a step costs" has the speed measured). Only trailing pads go, which no real position sees
    (every model is causal) and the loss masks, so the loss and gradients are those of the padded batch.
    Not cut: prefix batches (pre-padded), and models that unroll their time loop over a static length
    (FIXED_LENGTH)."""
    if isinstance(batch, PrefixBatch) or not cuts_to_longest(model):
        return batch
    return to_width(batch, int(batch.lengths.max()))


def cuts_to_longest(model: keras.Model) -> bool:
    """Whether cut_to_longest cuts this model's (sequence) batches on the engine in use."""
    return not (getattr(model, "FIXED_LENGTH", False) or model.jit_compile or keras.backend.backend() == "jax")


def train_step(model: keras.Model, batch: Batch) -> float:
    batch = cut_to_longest(model, batch)
    return float(model.train_on_batch(inputs(batch), batch.targets, sample_weight=batch.mask))


def eval_loss(model: keras.Model, batches) -> float:
    total = tokens = 0.0
    for b in (cut_to_longest(model, b) for b in batches):
        n = b.num_tokens
        total += float(model.test_on_batch(inputs(b), b.targets, sample_weight=b.mask)) * n
        tokens += n
    return total / max(tokens, 1)

