"""Seed 003's Transformer decoder in PyTorch: a caption decoder cross-attending to the image grid.

    spatial [B, P, C] -> Linear(C, d) -> LayerNorm ------------------------------ memory [B, P, d]
                                                                                       |
    tokens [B, T] -> Embedding(V, d, padding_idx=0) [-> Linear(E, d) if embed_dim=E]   |
          * sqrt(d) + sinusoidal positions -> LayerNorm -> Dropout                     |
          -> N x TransformerDecoderLayer:  causal self-attention  (+ Add & LayerNorm)  |
                                           cross-attention over memory <--------------'
                                           (+ Add & LayerNorm)
                                           FF: Linear(F) -> ReLU -> Linear(d)  (+ Add & LayerNorm)
          -> Linear(V)                                               (softmax inside the loss)

Seed 003 is a from-scratch Transformer decoder (ResNet-101 grid features, "Transformer Decoder
(60M)", cross-entropy plus an EOS-suppression loss before 15 tokens, beam 5 with length
normalisation 0.6). The seed's text gives no sizes; they come from the repository it describes
(oyetripathi/image_captioning, models/decoders.py and experiments/relaion_pop_transformer.yaml):
d_model 512, 8 heads, 8 layers, feed-forward 4 * d_model, dropout 0.1, ReLU, post-norm (Add & Norm
after each sublayer, PyTorch's norm_first=False), token embeddings of 128 projected to d_model and
scaled by sqrt(d_model), sinusoidal positions, LayerNorm then dropout on the sum, image features
projected by Linear + LayerNorm (seed total: 44.4M at its 15K vocabulary with one shared image
projection here, 51.7M with its per-layer ones; its README says 60M). Those sizes are far over the
budget of 3 epochs of the embedded dataset (30,000 captions, batch 64, 1,407 steps) in ~10 min on
the 2-core CPU: measured on the shared development machine, d_model 256 with only 2 layers already
took 0.52 s/step in Keras (12 min of steps) and 0.94 s/step in PyTorch (22 min, one thread). The
defaults are therefore d_model 128, 2 layers, feed-forward 512, keeping the seed's 8 heads,
4 * d_model, dropout 0.1 and ReLU: 0.32 s/step in Keras (padded to max_length, 7.4 min) and
0.29 s/step in PyTorch (6.7 min). `embed_dim` 0 embeds straight into d_model. The seed's decoder
is `--set torch_transformer.d_model=512 --set torch_transformer.num_layers=8
--set torch_transformer.dim_feedforward=2048 --set torch_transformer.embed_dim=128`.
One deviation kept at every size: the seed projects the image features again inside every layer
(8 Linear(2048, 512) + LayerNorm); here one projection makes the memory all layers share, which is
what nn.TransformerDecoder takes.

Built from PyTorch's own nn.TransformerDecoder/nn.TransformerDecoderLayer (batch_first). The Keras
mirror (plugins/keras/transformer.py) composes MultiHeadAttention, LayerNormalization and Dense
into the same layer; the parity tests copy weights across and compare logits and training losses.

Padding: each self-attention gets a causal mask and a key-padding mask on <pad> tokens. With
right-padded captions a pad key only ever follows the real query positions, which the causal mask
already stops from seeing it, so the key-padding mask changes nothing at real positions (it is
passed for clarity and costs nothing; parity with Keras holds with it, eval-mode fast path
included). The loss masks pad targets either way.

EOS suppression (seed 003): training adds aux = eos_weight * mean over real target positions t <
eos_min_len of softmax(logits[t])[<end>], the probability of ending a caption before eos_min_len
words. Neither the seed's text nor the versions of its repository we could read give the formula, so
it is ours. eos_weight 1.0 by default, because the seed trains with it always ("Cross Entropy Loss
added with EOS supression loss") and gives no weight. It also penalises true early ends (most
captions here and in Flickr8k have fewer than 15 words): at a target <end> of probability p, CE +
aux has gradient (1 - p)(w p - 1) on the <end> logit, w = eos_weight * (real targets / early
targets), about eos_weight on short captions; so w <= 1 slows the learning of a true <end> but never
stops it short of p = 1. `eos_weight=0` turns the term off (forward then returns logits alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from plugins.families.transformer import TRANSFORMER
from plugins.registry import ModelSpec, register


def sinusoid(positions: int, d: int) -> torch.Tensor:
    """pe[pos, 2i] = sin(pos / 10000^(2i/d)), pe[pos, 2i+1] = cos(same): the seed's encoding."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(positions, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return pe.float()


class TransformerCaptioner(nn.Module):
    IMAGE_STATE = 1  # memory: the image's own decoding state, never changed by step

    def __init__(self, spec: ModelSpec, d_model: int = 128, nhead: int = 8, num_layers: int = 2,
                 dim_feedforward: int = 512, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, embed_dim: int = 0, eos_weight: float = 1.0, eos_min_len: int = 15):
        super().__init__()
        if spec.spatial_shape is None:
            raise ValueError("the transformer decoder attends over spatial features; this dataset has none")
        if d_model % nhead or activation not in ("relu", "gelu"):
            raise ValueError(f"bad transformer hyperparameters: {d_model=} {nhead=} {activation=}")
        self.spec, self.d_model = spec, d_model
        self.eos_weight, self.eos_min_len = eos_weight, eos_min_len
        self.mem_proj = nn.Linear(spec.spatial_shape[1], d_model)
        self.mem_norm = nn.LayerNorm(d_model)
        self.embed = nn.Embedding(spec.vocab_size, embed_dim or d_model, padding_idx=spec.pad_id)
        self.embed_proj = nn.Linear(embed_dim, d_model) if embed_dim else None
        self.embed_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("pos", sinusoid(spec.max_length, d_model), persistent=False)

        def layer():
            return nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                              batch_first=True, norm_first=norm_first)

        self.decoder = nn.TransformerDecoder(layer(), num_layers)
        # TransformerDecoder deep-copies one layer, so all would start with equal weights; the seed
        # (and Keras) initialise every layer on its own
        self.decoder.layers = nn.ModuleList(layer() for _ in range(num_layers))
        self.out = nn.Linear(d_model, spec.vocab_size)

    def encode(self, spatial_feats: torch.Tensor) -> torch.Tensor:
        return self.mem_norm(self.mem_proj(spatial_feats))

    def embed_tokens(self, tokens: torch.Tensor):
        """tokens [B, T] -> decoder input [B, T, d], causal mask [T, T], key-padding mask [B, T]."""
        t = tokens.shape[1]
        x = self.embed(tokens)
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        pads = tokens == self.spec.pad_id
        # a token's position counts the real tokens before it: 0..n-1 for a caption, whether padded
        # after (as here) or before (the Keras recipe's prefix expansion; see the Keras mirror)
        positions = ((~pads).cumsum(1) - 1).clamp(min=0)
        x = self.drop(self.embed_norm(x * math.sqrt(self.d_model) + self.pos[positions]))
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).triu(1)  # True = may not attend
        return x, causal, pads

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x, causal, pads = self.embed_tokens(tokens)
        h = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=pads, tgt_is_causal=True)
        return self.out(h)

    def eos_penalty(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """eos_weight * mean P(<end>) over real positions t < eos_min_len (position t predicts word t+1)."""
        t = torch.arange(tokens.shape[1], device=tokens.device)
        early = ((tokens != self.spec.pad_id) & (t < self.eos_min_len)).float()
        p_end = logits.softmax(-1)[..., self.spec.end_id]
        return self.eos_weight * (p_end * early).sum() / early.sum().clamp(min=1.0)

    def forward(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor):
        """Teacher forcing: tokens [B, T] -> logits [B, T, V], or (logits, aux) when eos_weight > 0."""
        logits = self.decode(self.encode(spatial_feats), tokens)
        if self.eos_weight > 0:
            return logits, self.eos_penalty(logits, tokens)
        return logits

    # --- step-wise decoding: state = (memory [B, P, d], tokens so far [B, t]), both batch-first.
    # Each step re-runs the decoder over the whole prefix (no key/value cache): simple and exact.
    def init_state(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor):
        memory = self.encode(spatial_feats)
        return memory, torch.zeros(memory.shape[0], 0, dtype=torch.long, device=memory.device)

    def step(self, state, tokens: torch.Tensor):
        memory, prefix = state
        prefix = torch.cat([prefix, tokens[:, None]], 1)
        return self.decode(memory, prefix)[:, -1], (memory, prefix)

    def attention_step(self, state, tokens: torch.Tensor):
        """step, plus the last layer's cross-attention weights for the newest position, averaged
        over heads: alpha [B, P]. TransformerDecoderLayer never asks for its weights, so the last
        layer's cross-attention query is recomputed here as its forward computes it."""
        memory, prefix = state
        prefix = torch.cat([prefix, tokens[:, None]], 1)
        x, causal, pads = self.embed_tokens(prefix)
        *first, last = self.decoder.layers
        for layer in first:
            x = layer(x, memory, tgt_mask=causal, tgt_key_padding_mask=pads, tgt_is_causal=True)
        q = last.norm1(x) if last.norm_first else x
        sa = last.dropout1(last.self_attn(q, q, q, attn_mask=causal, key_padding_mask=pads, need_weights=False)[0])
        q = last.norm2(x + sa) if last.norm_first else last.norm1(x + sa)
        alpha = last.multihead_attn(q[:, -1:], memory, memory, need_weights=True)[1][:, 0]
        h = last(x, memory, tgt_mask=causal, tgt_key_padding_mask=pads, tgt_is_causal=True)
        return self.out(h[:, -1]), (memory, prefix), alpha


@register("torch_transformer", family=TRANSFORMER,
          description="seed 003: Transformer decoder over the spatial grid, EOS suppression before 15 words")
def torch_transformer(spec: ModelSpec, **hp) -> TransformerCaptioner:
    return TransformerCaptioner(spec, **hp)
