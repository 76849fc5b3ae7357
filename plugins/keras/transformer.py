"""Seed 003's Transformer decoder in Keras 3: a caption decoder cross-attending to the image grid.

    spatial [B, P, C] -> Dense(d) -> LayerNormalization ------------------------- memory [B, P, d]
                                                                                       |
    tokens [B, T] -> Embedding(V, d) [-> Dense(d) if embed_dim=E]                      |
          * sqrt(d) + sinusoidal positions -> LayerNormalization -> Dropout            |
          -> N x DecoderLayer:  causal self-attention  (+ Add & LayerNorm)             |
                                cross-attention over memory <--------------------------'
                                (+ Add & LayerNorm)
                                FF: Dense(F, relu) -> Dense(d)  (+ Add & LayerNorm)
          -> Dense(V)                                                (softmax inside the loss)

The mirror of plugins/torch/transformer.py, hyperparameter for hyperparameter (sizes, the seed's
values and the one deviation from the seed are described there). Keras has no decoder layer, so
DecoderLayer below composes keras.layers.MultiHeadAttention, LayerNormalization (epsilon 1e-5,
PyTorch's; Keras' default is 1e-3) and Dense into exactly what torch.nn.TransformerDecoderLayer
computes: the same sublayer order, residuals, norm placement (post-norm by default, pre-norm with
norm_first) and dropout sites (attention weights, each residual branch, inside the feed-forward).
Both frameworks carry the same weights and biases, so parameter counts are equal.

Padding: self-attention gets one boolean mask, causal AND key is not <pad>; with right-padded
captions the key-padding part changes nothing at real positions (the causal part already hides
every later position), and the loss masks pad targets. Positions count real tokens, so the
pre-padded prefixes of `--training prefix` (pads first, hidden as keys) give the same logits at
real positions as right-padded captions. The EOS-suppression term (see the torch file) is added
with add_loss when training, so train_on_batch returns CE + aux and test_on_batch CE alone.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from plugins.families.transformer import TRANSFORMER
from plugins.registry import ModelSpec, register


def sinusoid(positions: int, d: int) -> np.ndarray:
    """pe[pos, 2i] = sin(pos / 10000^(2i/d)), pe[pos, 2i+1] = cos(same): the seed's encoding."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    freq = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    pe = np.zeros((positions, d))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)[:, : d // 2]
    return pe.astype(np.float32)


class DecoderLayer(layers.Layer):
    """torch.nn.TransformerDecoderLayer(batch_first=True) in Keras, with its submodule names."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, activation: str,
                 norm_first: bool, **kw):
        super().__init__(**kw)
        self.norm_first = norm_first
        self.self_attn = layers.MultiHeadAttention(nhead, d_model // nhead, dropout=dropout, name="self_attn")
        self.multihead_attn = layers.MultiHeadAttention(nhead, d_model // nhead, dropout=dropout,
                                                        name="multihead_attn")
        self.linear1 = layers.Dense(dim_feedforward, activation=activation, name="linear1")
        self.linear2 = layers.Dense(d_model, name="linear2")
        self.norm1, self.norm2, self.norm3 = (layers.LayerNormalization(epsilon=1e-5, name=f"norm{i}")
                                              for i in (1, 2, 3))
        self.dropout = layers.Dropout(dropout)  # stateless: serves as torch's dropout, dropout1..3

    def sa_block(self, x, mask, training):
        return self.dropout(self.self_attn(x, x, attention_mask=mask, training=training), training=training)

    def mha_block(self, x, memory, training):
        out, scores = self.multihead_attn(x, memory, return_attention_scores=True, training=training)
        return self.dropout(out, training=training), scores

    def ff_block(self, x, training):
        h = self.dropout(self.linear1(x), training=training)
        return self.dropout(self.linear2(h), training=training)

    def call(self, x, memory, mask, training=False):
        """-> (output [B, T, d], cross-attention weights [B, heads, T, P])."""
        if self.norm_first:
            x = x + self.sa_block(self.norm1(x), mask, training)
            ca, scores = self.mha_block(self.norm2(x), memory, training)
            x = x + ca
            return x + self.ff_block(self.norm3(x), training), scores
        x = self.norm1(x + self.sa_block(x, mask, training))
        ca, scores = self.mha_block(x, memory, training)
        x = self.norm2(x + ca)
        return self.norm3(x + self.ff_block(x, training)), scores


class TransformerCaptioner(keras.Model):
    IMAGE_STATE = 1  # memory: the image's own decoding state, never changed by step

    def __init__(self, spec: ModelSpec, d_model: int = 128, nhead: int = 8, num_layers: int = 2,
                 dim_feedforward: int = 512, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, embed_dim: int = 0, eos_weight: float = 1.0, eos_min_len: int = 15,
                 **kw):
        super().__init__(**kw)
        if spec.spatial_shape is None:
            raise ValueError("the transformer decoder attends over spatial features; this dataset has none")
        if d_model % nhead or activation not in ("relu", "gelu"):
            raise ValueError(f"bad transformer hyperparameters: {d_model=} {nhead=} {activation=}")
        self.spec, self.d_model = spec, d_model
        self.eos_weight, self.eos_min_len = eos_weight, eos_min_len
        self.mem_proj = layers.Dense(d_model, name="mem_proj")
        self.mem_norm = layers.LayerNormalization(epsilon=1e-5, name="mem_norm")
        self.embed = layers.Embedding(spec.vocab_size, embed_dim or d_model, name="embed")
        self.embed_proj = layers.Dense(d_model, name="embed_proj") if embed_dim else None
        self.embed_norm = layers.LayerNormalization(epsilon=1e-5, name="embed_norm")
        self.drop = layers.Dropout(dropout)
        self.pos = sinusoid(spec.max_length, d_model)  # a constant, not a weight
        # `layers` is a keras.Model property: torch's decoder.layers[i] is decoder_layers[i] here
        self.decoder_layers = [DecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, norm_first,
                                            name=f"layer{i}") for i in range(num_layers)]
        self.out = layers.Dense(spec.vocab_size, name="out")
        self.build_all()

    def build_all(self) -> None:
        """Create every weight now, so parameter counts and weight transfer work before training."""
        p, c = self.spec.spatial_shape
        self({"global": ops.zeros((1, self.spec.global_dim)), "spatial": ops.zeros((1, p, c)),
              "tokens": ops.ones((1, 2), dtype="int32")})

    def encode(self, spatial_feats):
        return self.mem_norm(self.mem_proj(spatial_feats))

    def decode(self, memory, tokens, training=False):
        """-> (logits [B, T, V], last layer's cross-attention weights [B, heads, T, P])."""
        t = ops.shape(tokens)[1]
        x = self.embed(tokens)
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        real = ops.not_equal(tokens, self.spec.pad_id)
        # a token's position counts the real tokens before it, so that a pre-padded prefix (the
        # worker pre-pads Keras inputs under --training prefix) gets the positions of a post-padded one
        positions = ops.maximum(ops.cumsum(ops.cast(real, "int32"), axis=1) - 1, 0)
        x = x * math.sqrt(self.d_model) + ops.take(ops.convert_to_tensor(self.pos, x.dtype), positions, axis=0)
        x = self.drop(self.embed_norm(x), training=training)
        i = ops.arange(t)
        causal = ops.expand_dims(i[:, None] >= i[None, :], 0)  # True = may attend
        mask = ops.logical_and(causal, ops.expand_dims(real, 1))
        scores = None
        for layer in self.decoder_layers:
            x, scores = layer(x, memory, mask, training=training)
        return self.out(x), scores

    def eos_penalty(self, logits, tokens):
        """eos_weight * mean P(<end>) over real positions t < eos_min_len (position t predicts word t+1)."""
        t = ops.arange(ops.shape(tokens)[1])
        early = ops.cast(ops.logical_and(ops.not_equal(tokens, self.spec.pad_id), t[None, :] < self.eos_min_len),
                         "float32")
        p_end = ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., self.spec.end_id]  # bf16 policy: in float32
        return self.eos_weight * ops.sum(p_end * early) / ops.maximum(ops.sum(early), 1.0)

    def call(self, inputs, training=False):
        """Teacher forcing: {"spatial": [B, P, C], "tokens": [B, T], "global": unused} -> logits [B, T, V]."""
        tokens = inputs["tokens"]
        logits, _ = self.decode(self.encode(inputs["spatial"]), tokens, training)
        if training and self.eos_weight > 0:
            self.add_loss(self.eos_penalty(logits, tokens))
        return logits

    # --- step-wise decoding: state = (memory [B, P, d], tokens so far [B, t]), both batch-first;
    # each step re-runs the decoder over the whole prefix (no key/value cache): simple and exact
    def init_state(self, global_feats, spatial_feats):
        memory = self.encode(ops.convert_to_tensor(spatial_feats))
        return memory, ops.zeros((ops.shape(memory)[0], 0), dtype="int32")

    def attention_step(self, state, tokens):
        """-> (logits [B, V], state, alpha [B, P]): alpha is the last layer's cross-attention for the
        newest position, averaged over heads (what torch's MultiheadAttention returns by default)."""
        memory, prefix = state
        prefix = ops.concatenate([prefix, ops.expand_dims(ops.cast(tokens, "int32"), 1)], axis=1)
        logits, scores = self.decode(memory, prefix)
        return logits[:, -1], (memory, prefix), ops.mean(scores[:, :, -1], axis=1)

    def step(self, state, tokens):
        logits, state, _ = self.attention_step(state, tokens)
        return logits, state


@register("keras_transformer", family=TRANSFORMER,
          description="seed 003: Transformer decoder over the spatial grid, EOS suppression before 15 words")
def keras_transformer(spec: ModelSpec, **hp) -> TransformerCaptioner:
    return TransformerCaptioner(spec, **hp)
