"""Seed 004's recurrent family in Keras 3: vanilla RNN, LSTM and attention LSTM captioners.

rnn / lstm (the pooled image vector only):

    image (D) -> Dense(H) = h0   (affine, no activation: the seed's featureProjection; LSTM: c0 = 0)
    tokens -> Embedding(V, E, mask_zero=True) -> SimpleRNN(tanh, H) | LSTM(H) from h0 -> [Dropout] -> Dense(V)

attention_lstm (the P spatial vectors; the seed's 4x4 RegNet grid, here spec.spatial_shape):

    spatial (P, C) -> Dense(H) = A (P, H);   h0 = c0 = mean_p A
    step t:  alpha = softmax_p(<h_{t-1}, A_p> / sqrt(H));  ctx = sum_p alpha_p A_p
             h_t, c_t = LSTMCell([emb(w_t), ctx], (h_{t-1}, c_{t-1}))  -> [Dropout] -> Dense(V)

The mirror of plugins/torch/recurrent.py (same hyperparameters, same attribute names; the
seed-004 choices are listed there). Padding: `masking="mask"` is Keras' `mask_zero=True`, the mask
passed explicitly to the recurrent layer (a subclassed model does not propagate it by itself), so
masked steps carry the state through; with right-padded batches that changes nothing at real
positions, and the loss masks pads either way. attention_lstm loops over the time steps in Python
(the context of step t depends on h_{t-1}), over the batch's fixed length, pads included (their
outputs are masked out of the loss).
Keras' recurrent layers have one bias where PyTorch has two: H (SimpleRNN) or 4*H (LSTM) fewer
parameters for the same model.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from plugins.families.recurrent import ATTENTION_LSTM, RECURRENT
from plugins.registry import ModelSpec, register


class RecurrentCaptioner(keras.Model):
    """cell="rnn" (tanh) or "lstm", initialised from the pooled image vector."""

    def __init__(self, spec: ModelSpec, cell: str = "lstm", embed_dim: int = 256, hidden_dim: int = 512,
                 dropout: float = 0.0, masking: str = "mask", **kw):
        super().__init__(**kw)
        if cell not in ("rnn", "lstm") or masking not in ("none", "mask"):
            raise ValueError(f"bad recurrent hyperparameters: {cell=}, {masking=}")
        self.spec, self.cell, self.masking = spec, cell, masking
        self.feat_proj = layers.Dense(hidden_dim, name="feat_proj")
        self.embed = layers.Embedding(spec.vocab_size, embed_dim, mask_zero=masking == "mask", name="embed")
        rnn = layers.SimpleRNN if cell == "rnn" else layers.LSTM  # SimpleRNN's default activation is tanh
        self.rnn = rnn(hidden_dim, return_sequences=True, return_state=True, name="rnn")
        self.drop = layers.Dropout(dropout)
        self.out = layers.Dense(spec.vocab_size, name="out")
        self.build_all()

    def build_all(self) -> None:
        """Create every weight now, so parameter counts and weight transfer work before training."""
        self({"global": ops.zeros((1, self.spec.global_dim)), "tokens": ops.ones((1, 2), dtype="int32")})

    def initial(self, global_feats):
        """Initial state: [h0] for the RNN, [h0, c0 = 0] for the LSTM, as in the seed."""
        h0 = self.feat_proj(global_feats)
        return (h0,) if self.cell == "rnn" else (h0, ops.zeros_like(h0))

    def run(self, x, state, mask=None, training=False):
        y, *state = self.rnn(x, initial_state=list(state), mask=mask, training=training)
        return y, tuple(state)

    def call(self, inputs, training=False):
        """Teacher forcing: {"global": [B, D], "tokens": [B, T]} -> logits [B, T, V]."""
        tokens = inputs["tokens"]
        emb = self.embed(tokens)
        y, _ = self.run(emb, self.initial(inputs["global"]), self.embed.compute_mask(tokens), training)
        return self.out(self.drop(y, training=training))

    # --- step-wise decoding: state = (h,) or (h, c), every tensor batch-first
    def init_state(self, global_feats, spatial_feats):
        return self.initial(global_feats)

    def step(self, state, tokens):
        y, state = self.run(self.embed(ops.expand_dims(tokens, 1)), state)
        return self.out(y[:, 0]), state


class AttentionLSTMCaptioner(keras.Model):
    """Seed 004's attention LSTM: scaled dot-product attention on h_{t-1}, context into the LSTM input."""
    IMAGE_STATE = 1  # the projected grid: the image's own decoding state, never changed by step
    FIXED_LENGTH = True  # a Python time loop over the static length: batches keep max_length (backends.keras.train)


    def __init__(self, spec: ModelSpec, embed_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.0, **kw):
        super().__init__(**kw)
        if spec.spatial_shape is None:
            raise ValueError("attention_lstm needs spatial features (an extractor with a spatial grid)")
        self.spec, self.hidden_dim = spec, hidden_dim
        self.feat_proj = layers.Dense(hidden_dim, name="feat_proj")
        self.embed = layers.Embedding(spec.vocab_size, embed_dim, name="embed")
        self.cell = layers.LSTMCell(hidden_dim, name="cell")  # input [x_t, ctx_t]: the seed's Wx and Wattn
        self.drop = layers.Dropout(dropout)
        self.out = layers.Dense(spec.vocab_size, name="out")
        self.build_all()

    def build_all(self) -> None:
        """Create every weight now, so parameter counts and weight transfer work before training."""
        self({"global": ops.zeros((1, self.spec.global_dim)), "spatial": ops.zeros((1, *self.spec.spatial_shape)),
              "tokens": ops.ones((1, 2), dtype="int32")})

    def attend(self, proj, h):
        """proj [B, P, H], h [B, H] -> context [B, H], alpha [B, P]."""
        scores = ops.matmul(ops.expand_dims(h, 1), ops.transpose(proj, (0, 2, 1)))[:, 0] / math.sqrt(self.hidden_dim)
        alpha = ops.softmax(scores, axis=-1)
        return ops.matmul(ops.expand_dims(alpha, 1), proj)[:, 0], alpha

    def cell_step(self, proj, h, c, emb, training=False):
        ctx, alpha = self.attend(proj, h)
        h, (_, c) = self.cell(ops.concatenate([emb, ctx], axis=-1), [h, c], training=training)
        return h, c, alpha

    def call(self, inputs, training=False):
        """Teacher forcing: {"spatial": [B, P, C], "tokens": [B, T]} -> logits [B, T, V]."""
        proj, h, c = self.init_state(inputs["global"], inputs["spatial"])
        emb = self.embed(inputs["tokens"])
        steps = emb.shape[1]
        if steps is None:  # TensorFlow relaxes the shape after seeing several lengths
            raise ValueError("keras_attention_lstm unrolls its time loop: feed it batches of one fixed length "
                             "(iterate_batches(..., pad_to_max=True)), as the Keras backend does (FIXED_LENGTH)")
        # a Python loop over the fixed length, not ops.scan: TensorFlow's scan is a while_loop without an
        # iteration bound, whose gradient XLA (jit_compile) cannot build; unrolled, it is also faster
        hs = []
        for t in range(steps):
            h, c, _ = self.cell_step(proj, h, c, emb[:, t], training)
            hs.append(h)
        return self.out(self.drop(ops.stack(hs, axis=1), training=training))

    # --- step-wise decoding: state = (A [B, P, H], h, c), every tensor batch-first
    def init_state(self, global_feats, spatial_feats):
        proj = self.feat_proj(spatial_feats)
        h0 = ops.mean(proj, axis=1)
        return proj, h0, h0  # the seed: c0 = h0 = mean of the projected grid

    def attention_step(self, state, tokens):
        proj, h, c = state
        h, c, alpha = self.cell_step(proj, h, c, self.embed(tokens))
        return self.out(h), (proj, h, c), alpha

    def step(self, state, tokens):
        logits, state, _ = self.attention_step(state, tokens)
        return logits, state




@register("keras_rnn", family=RECURRENT,
          description="seed 004: vanilla tanh SimpleRNN, h0 = affine(pooled image), mask_zero")
def keras_rnn(spec: ModelSpec, **hp) -> RecurrentCaptioner:
    return RecurrentCaptioner(spec, cell="rnn", **hp)


@register("keras_lstm", family=RECURRENT,
          description="seed 004: LSTM, h0 = affine(pooled image), c0 = 0, mask_zero")
def keras_lstm(spec: ModelSpec, **hp) -> RecurrentCaptioner:
    return RecurrentCaptioner(spec, cell="lstm", **hp)


@register("keras_attention_lstm", family=ATTENTION_LSTM,
          description="seed 004: LSTM with scaled dot-product attention over the spatial grid fed into its input")
def keras_attention_lstm(spec: ModelSpec, **hp) -> AttentionLSTMCaptioner:
    return AttentionLSTMCaptioner(spec, **hp)
