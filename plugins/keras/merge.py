"""Seed 000's merge family in Keras 3: the Kaggle recipe's model and its variants.

    image (D) -> [Dropout] -> Dense(U, relu) ---------------------------.
                                                                          add (U) | concat (2U)
    tokens -> Embedding(V, U, mask_zero=True) -> [Dropout] -> LSTM(U) ---'
          -> Dense(U, relu) -> [Dropout] -> Dense(V)      (softmax inside the loss)

The mirror of plugins/torch/merge.py, hyperparameter for hyperparameter. Padding: `masking="mask"`
is Keras' `mask_zero=True`, the mask passed explicitly to the LSTM (a subclassed model does not
propagate it by itself), so masked steps carry the state through; with right-padded batches that
changes nothing at real positions, and the loss masks pads either way. Keras' LSTM has one bias
vector per gate where PyTorch has two: 4*U fewer parameters for the same model. `init="shared"`
is accepted for symmetry with the torch mirror and changes nothing: the scheme both frameworks
share is Keras' default one.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from plugins.families.merge import MERGE
from plugins.registry import ModelSpec, register


class MergeCaptioner(keras.Model):
    IMAGE_STATE = 1  # img: the image's own decoding state, never changed by step

    def __init__(self, spec: ModelSpec, units: int = 256, fusion: str = "add", dropout: float = 0.4,
                 dropout_placement: str = "early", masking: str = "mask", hidden_layers: int = 1,
                 init: str = "framework", **kw):
        super().__init__(**kw)
        if init not in ("framework", "shared"):
            # the shared scheme is Keras' own defaults (see plugins/torch/merge.py): nothing to change here
            raise ValueError(f"init must be 'framework' or 'shared' (both Keras' defaults here), got {init!r}")
        if fusion not in ("add", "concat") or dropout_placement not in ("early", "late") \
                or masking not in ("none", "mask"):
            raise ValueError(f"bad merge hyperparameters: {fusion=}, {dropout_placement=}, {masking=}")
        self.spec, self.units = spec, units
        self.fusion, self.placement, self.masking = fusion, dropout_placement, masking
        self.img = layers.Dense(units, activation="relu", name="img")
        self.embed = layers.Embedding(spec.vocab_size, units, mask_zero=masking == "mask", name="embed")
        self.lstm = layers.LSTM(units, return_sequences=True, return_state=True, name="lstm")
        self.hidden = [layers.Dense(units, activation="relu", name=f"hidden{i}") for i in range(hidden_layers)]
        self.out = layers.Dense(spec.vocab_size, name="out")
        self.drop = layers.Dropout(dropout)
        self.build_all()

    def build_all(self) -> None:
        """Create every weight now, so parameter counts and weight transfer work before training."""
        self({"global": ops.zeros((1, self.spec.global_dim)), "tokens": ops.ones((1, 2), dtype="int32")})

    def encode_image(self, global_feats, training=False):
        x = self.drop(global_feats, training=training) if self.placement == "early" else global_feats
        return self.img(x)

    def head(self, img, text, training=False):
        if self.fusion == "add":
            x = img + text
        else:
            x = ops.concatenate([ops.broadcast_to(img, ops.shape(text)), text], axis=-1)
        for layer in self.hidden:
            x = layer(x)
        if self.placement == "late":
            x = self.drop(x, training=training)
        return self.out(x)

    def call(self, inputs, training=False):
        """Teacher forcing: {"global": [B, D], "tokens": [B, T]} -> logits [B, T, V].

        One dict argument, so that Keras' own train_on_batch drives it on every backend."""
        img = self.encode_image(inputs["global"], training)
        tokens = inputs["tokens"]
        emb = self.embed(tokens)
        mask = self.embed.compute_mask(tokens)
        if self.placement == "early":
            emb = self.drop(emb, training=training)
        text, _, _ = self.lstm(emb, mask=mask, training=training)
        return self.head(ops.expand_dims(img, 1), text, training)

    # --- step-wise decoding: state = (image vector, h, c), every tensor batch-first
    def init_state(self, global_feats, spatial_feats):
        img = self.encode_image(global_feats)
        zeros = ops.zeros((ops.shape(img)[0], self.units))
        return img, zeros, zeros

    def step(self, state, tokens):
        img, h, c = state
        text, h, c = self.lstm(self.embed(ops.expand_dims(tokens, 1)), initial_state=[h, c])
        return self.head(img, text[:, 0]), (img, h, c)


CONCAT = dict(fusion="concat", dropout_placement="late")  # seed 000's PyTorch model, against MERGE's defaults


@register("keras_merge", family=MERGE,
          description="seed 000's Keras model: add fusion, early dropout, mask_zero")
def keras_merge(spec: ModelSpec, **hp) -> MergeCaptioner:
    return MergeCaptioner(spec, **hp)


@register("keras_concat", family=MERGE, defaults=CONCAT,
          description="seed 000's PyTorch model in Keras: concat fusion, late dropout")
def keras_concat(spec: ModelSpec, **hp) -> MergeCaptioner:
    return MergeCaptioner(spec, **hp)
