"""Show, Attend and Tell (soft attention) in Keras 3, as in sgrvinod's tutorial (seeds 001 and 002).

    spatial feats [B, P, C] --mean over P--> init_h, init_c: Dense(H) each -> h0, c0
    every step t, from the previous state h:
      encoder_att(feats) [B,P,A] + decoder_att(h) [B,1,A] -> ReLU -> full_att -> softmax over P -> alpha [B, P]
      context = sum_p alpha_p * feats_p  (C);  gate = sigmoid(f_beta(h))  (C)
      [embedding(word_t) (E) ; gate * context (C)] -> LSTMCell(H) -> h, c
      h -> Dropout -> fc: Dense(V) -> logits_t      (softmax inside the loss)
    aux = alpha_c * mean over (B, P) of (1 - sum_t alpha_t)^2      (doubly stochastic regulariser)

The mirror of plugins/torch/attention.py, hyperparameter for hyperparameter and layer name for layer
name; the global vector is not used. Teacher forcing is a Python loop over the T input positions
calling the LSTMCell as `cell(x, [h, c])`: the Keras backend feeds fixed-length (max_length) batches,
so the loop is traced once. Padding: there is no mask; every row runs all T steps, and a pad
position's output depends only on the real steps before it, so real positions are unaffected. Pads
are masked out of the loss by the sample weights and out of the regulariser, whose sum over t counts
only real steps, found from the tokens: input t is real when it is neither <pad> nor <end> (exactly
t < length - 1, the tutorial's decode lengths). The regulariser is `add_loss`ed only when training,
so train_on_batch returns CE + aux and test_on_batch CE alone. Keras' LSTMCell has one bias vector
where PyTorch's has two: 4 * decoder_dim fewer parameters for the same model. Embedding and fc
weights start U(-0.1, 0.1) with a zero fc bias as in the tutorial, Keras defaults elsewhere.

`remat=True` (as in the torch twin) wraps the attention scores in keras.remat: their [B, P, A]
activations, which TensorFlow otherwise keeps for every one of the T unrolled steps, are recomputed
in the backward pass. Same losses to rounding; at Flickr8k's shapes (B 64, T 42, 196 x 2048,
V 8,485) training's peak RSS falls from 4,283 to 3,228 MiB at 11% more time per step (2026-12-02).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from plugins.families.show_attend_tell import SHOW_ATTEND_TELL
from plugins.registry import ModelSpec, register


class Attention(layers.Layer):
    """Additive attention over the P positions, given the previous decoder state."""

    def __init__(self, attention_dim: int, **kw):
        super().__init__(**kw)
        self.encoder_att = layers.Dense(attention_dim, name="encoder_att")
        self.decoder_att = layers.Dense(attention_dim, name="decoder_att")
        self.full_att = layers.Dense(1, name="full_att")

    def call(self, feats, h, enc_att=None, remat=False):
        """feats [B, P, C], h [B, H] -> (context [B, C], alpha [B, P]). enc_att = encoder_att(feats)
        [B, P, A] when the caller has it: it does not depend on h, so a sequence needs it once.
        remat: recompute the [B, P, A] scores' activations in the backward pass instead of keeping
        them, the bulk of a training step's memory per time step (same values, more compute)."""
        if enc_att is None:
            enc_att = self.encoder_att(feats)
        scores = (keras.remat(self.scores) if remat else self.scores)(enc_att, h)
        alpha = ops.softmax(scores, axis=1)
        # one batched matmul [B,1,P] @ [B,P,C], as in torch: the broadcast product and sum made
        # TensorFlow keep more per step (measured: 4,636 vs 4,185 MiB at T = 42) and run slower
        return ops.matmul(ops.expand_dims(alpha, 1), feats)[:, 0], alpha

    def scores(self, enc_att, h):
        return self.full_att(ops.relu(enc_att + ops.expand_dims(self.decoder_att(h), 1)))[..., 0]


class ShowAttendTell(keras.Model):
    IMAGE_STATE = 2  # feats, encoder_att(feats): the image's own decoding state, never changed by step
    FIXED_LENGTH = True  # a Python time loop over the static length: batches keep max_length (backends.keras.train)

    def __init__(self, spec: ModelSpec, embed_dim: int = 512, attention_dim: int = 512, decoder_dim: int = 512,
                 dropout: float = 0.5, alpha_c: float = 1.0, remat: bool = False, **kw):
        super().__init__(**kw)
        if spec.spatial_shape is None:
            raise ValueError("show_attend_tell needs spatial features [P, C]; the dataset's extractor has none")
        self.spec, self.alpha_c, self.remat = spec, alpha_c, remat
        encoder_dim = spec.spatial_shape[1]
        uniform = keras.initializers.RandomUniform(-0.1, 0.1)
        self.attention = Attention(attention_dim, name="attention")
        self.embedding = layers.Embedding(spec.vocab_size, embed_dim, embeddings_initializer=uniform, name="embedding")
        self.dropout = layers.Dropout(dropout)
        self.decode_step = layers.LSTMCell(decoder_dim, name="decode_step")
        self.init_h = layers.Dense(decoder_dim, name="init_h")
        self.init_c = layers.Dense(decoder_dim, name="init_c")
        self.f_beta = layers.Dense(encoder_dim, name="f_beta")
        self.fc = layers.Dense(spec.vocab_size, kernel_initializer=uniform, name="fc")
        self.build_all()

    def build_all(self) -> None:
        """Create every weight now, so parameter counts and weight transfer work before training."""
        positions, channels = self.spec.spatial_shape
        self({"global": ops.zeros((1, self.spec.global_dim)), "spatial": ops.zeros((1, positions, channels)),
              "tokens": ops.ones((1, 2), dtype="int32")})

    def build(self, input_shape):
        # the attention layer first, through its own call, so that its weights are all named attention/...
        # as in torch (call() then uses attention.encoder_att directly, once per sequence)
        positions, channels = self.spec.spatial_shape
        self.attention(ops.zeros((1, positions, channels)), ops.zeros((1, self.decode_step.units)))

    def init_hidden_state(self, feats):
        mean = ops.mean(feats, axis=1)
        return self.init_h(mean), self.init_c(mean)

    def decode(self, feats, enc_att, emb_t, h, c, training=False):
        """One step: attend with the previous h, gate the context, advance the LSTMCell, score words."""
        context, alpha = self.attention(feats, h, enc_att, remat=training and self.remat)
        gate = ops.sigmoid(self.f_beta(h))
        h, (h, c) = self.decode_step(ops.concatenate([emb_t, gate * context], axis=1), [h, c], training=training)
        return self.fc(self.dropout(h, training=training)), h, c, alpha

    def call(self, inputs, training=False):
        """Teacher forcing: {"spatial": [B, P, C], "tokens": [B, T], "global" unused} -> logits [B, T, V].

        One dict argument, so that Keras' own train_on_batch drives it on every backend."""
        feats, tokens = inputs["spatial"], inputs["tokens"]
        enc_att = self.attention.encoder_att(feats)
        h, c = self.init_hidden_state(feats)
        emb = self.embedding(tokens)
        steps = tokens.shape[1]
        if steps is None:  # TensorFlow relaxes the shape after seeing several lengths
            raise ValueError("keras_show_attend_tell unrolls its time loop: feed it batches of one fixed length "
                             "(iterate_batches(..., pad_to_max=True)), as the Keras backend does (FIXED_LENGTH)")
        logits, alphas = [], []
        for t in range(steps):
            logit, h, c, alpha = self.decode(feats, enc_att, emb[:, t], h, c, training)
            logits.append(logit)
            alphas.append(alpha)
        if training and self.alpha_c:
            self.add_loss(self.doubly_stochastic(tokens, ops.stack(alphas, axis=1)))
        return ops.stack(logits, axis=1)

    def doubly_stochastic(self, tokens, alphas):
        """alpha_c * mean over (B, P) of (1 - sum over real steps t of alpha_t)^2; alphas [B, T, P]."""
        real = ops.logical_and(ops.not_equal(tokens, self.spec.pad_id), ops.not_equal(tokens, self.spec.end_id))
        alphas = ops.cast(alphas, "float32")  # under the bf16 policy: the loss is summed in float32
        summed = ops.sum(alphas * ops.expand_dims(ops.cast(real, alphas.dtype), -1), axis=1)
        return self.alpha_c * ops.mean(ops.square(1.0 - summed))

    # --- step-wise decoding: state = (feats, encoder_att(feats), h, c), every tensor batch-first
    def init_state(self, global_feats, spatial_feats):
        feats = ops.convert_to_tensor(spatial_feats)
        h, c = self.init_hidden_state(feats)
        return feats, self.attention.encoder_att(feats), h, c

    def attention_step(self, state, tokens):
        feats, enc_att, h, c = state
        logits, h, c, alpha = self.decode(feats, enc_att, self.embedding(tokens), h, c)
        return logits, (feats, enc_att, h, c), alpha

    def step(self, state, tokens):
        logits, state, _ = self.attention_step(state, tokens)
        return logits, state




@register("keras_show_attend_tell", family=SHOW_ATTEND_TELL,
          description="seeds 001/002: sgrvinod's Show, Attend and Tell decoder in Keras (soft attention, gate)")
def keras_show_attend_tell(spec: ModelSpec, **hp) -> ShowAttendTell:
    return ShowAttendTell(spec, **hp)
