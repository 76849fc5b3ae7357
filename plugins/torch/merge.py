"""Seed 000's merge family in PyTorch: an image vector and an LSTM text state, fused, then decoded.

    image (D) -> [Dropout] -> Linear(U) -> ReLU ----------------.
                                                                  add (U) | concat (2U)
    tokens -> Embedding(V, U, padding_idx=0) -> [Dropout] -> LSTM(U) -'
          -> Linear(U) -> ReLU -> [Dropout] -> Linear(V)

`fusion` (add/concat), `dropout_placement` (early: on the image input and the embeddings, as in
Keras; late: before the output layer, as in the seed's PyTorch model) and `masking` are the axes
seed 000 argued about, so they are hyperparameters here and in the Keras mirror (plugins/keras/merge.py).

Training is whole-sequence teacher forcing: the LSTM output at step t is the state after the
prefix up to t, exactly what the recipes' one-sample-per-prefix expansion computes, for all prefixes
at once. Padding: with right-padded batches an LSTM output at a real position never depends on
later pads, so `masking="none"` gives the same logits at real positions as packing; `packed` runs
`pack_padded_sequence` so the LSTM skips the pads' compute (option 4 of the
Keras-vs-PyTorch comparison CapBench grew from, docs/seed000.md). The loss masks pads
either way. `lstm_bias="one"` freezes PyTorch's second LSTM bias at zero (Keras' layout), for exact
step-by-step parity and as an ablation axis; `init="shared"` replaces PyTorch's initialisers with
the one scheme both frameworks share (Keras' defaults), another framework-default axis.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from backends.torch.common import real_positions
from plugins.families.merge import MERGE
from plugins.registry import ModelSpec, register


class MergeCaptioner(nn.Module):
    IMAGE_STATE = 1  # img: the image's own decoding state, never changed by step

    def __init__(self, spec: ModelSpec, units: int = 256, fusion: str = "add", dropout: float = 0.4,
                 dropout_placement: str = "early", masking: str = "none", hidden_layers: int = 1,
                 lstm_bias: str = "two", init: str = "framework"):
        super().__init__()
        if fusion not in ("add", "concat") or dropout_placement not in ("early", "late") \
                or masking not in ("none", "packed"):
            raise ValueError(f"bad merge hyperparameters: {fusion=}, {dropout_placement=}, {masking=}")
        self.fusion, self.placement, self.masking = fusion, dropout_placement, masking
        self.img = nn.Linear(spec.global_dim, units)
        self.embed = nn.Embedding(spec.vocab_size, units, padding_idx=spec.pad_id)
        self.lstm = nn.LSTM(units, units, batch_first=True)
        if lstm_bias == "one":
            # Keras' layout: b_ih + b_hh is one vector there, and Adam moves each of PyTorch's two
            # vectors by ~lr per step, i.e. the sum by ~2*lr. Freezing b_hh at 0 removes that difference.
            nn.init.zeros_(self.lstm.bias_hh_l0)
            self.lstm.bias_hh_l0.requires_grad_(False)
        elif lstm_bias != "two":
            raise ValueError(f"lstm_bias must be 'two' (PyTorch) or 'one' (Keras), got {lstm_bias!r}")
        width = units if fusion == "add" else 2 * units
        self.hidden = nn.ModuleList(nn.Linear(width if i == 0 else units, units) for i in range(hidden_layers))
        self.out = nn.Linear(units, spec.vocab_size)
        self.drop = nn.Dropout(dropout)
        if init == "shared":
            keras_initialisers(self)
        elif init != "framework":
            raise ValueError(f"init must be 'framework' (PyTorch's defaults) or 'shared' (Keras'), got {init!r}")

    def encode_image(self, global_feats: torch.Tensor) -> torch.Tensor:
        x = self.drop(global_feats) if self.placement == "early" else global_feats
        return torch.relu(self.img(x))

    def head(self, img: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.fusion == "add":
            x = img + text
        else:
            x = torch.cat([img.expand(*text.shape[:-1], img.shape[-1]), text], dim=-1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        if self.placement == "late":
            x = self.drop(x)
        return self.out(x)

    def forward(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor | None, tokens: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens [B, T] -> logits [B, T, V]; training: [N, V] at the N real positions."""
        img = self.encode_image(global_feats)
        emb = self.embed(tokens)
        if self.placement == "early":
            emb = self.drop(emb)
        if self.masking == "packed":
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            text, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tokens.shape[1])
        else:
            text, _ = self.lstm(emb)
        if self.training:
            # a loss needs logits only where there is a target: the head (most of the FLOPs, V wide)
            # runs on the real positions, [N, U] in (caption, time) order, as the torch backend's
            # loss reads 2-D logits. Pads are 41% of a Flickr8k batch cut to its longest caption.
            real = real_positions(tokens, lengths)
            return self.head(img[:, None, :].expand(-1, tokens.shape[1], -1)[real], text[real])
        return self.head(img[:, None, :], text)

    # --- step-wise decoding: state = (image vector, h, c), every tensor batch-first so that
    # the backend's beam search can reorder any plugin's state with one index_select
    def init_state(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor | None):
        img = self.encode_image(global_feats)
        zeros = img.new_zeros(img.shape[0], self.lstm.hidden_size)
        return img, zeros, zeros.clone()

    def step(self, state, tokens: torch.Tensor):
        img, h, c = state
        text, (h, c) = self.lstm(self.embed(tokens)[:, None, :], (h[None], c[None]))
        return self.head(img, text[:, 0]), (img, h[0], c[0])


@torch.no_grad()
def keras_initialisers(model: MergeCaptioner) -> None:
    """The shared scheme (`init="shared"`): Keras' layer defaults, which both frameworks can express.

    PyTorch's defaults differ everywhere: Linear and LSTM weights U(+-1/sqrt(fan_in)) (kaiming
    uniform with a=sqrt(5)), biases non-zero, embeddings N(0, 1). Keras: Glorot-uniform kernels,
    orthogonal recurrent kernels, zero biases with the forget gate's at 1, embeddings U(+-0.05).
    Gate order is i, f, g, o in both, so the forget slice is [U:2U]."""
    for layer in [model.img, *model.hidden, model.out]:
        nn.init.xavier_uniform_(layer.weight)  # fan_in/fan_out as Keras' kernel [in, out] sees them
        nn.init.zeros_(layer.bias)
    nn.init.uniform_(model.embed.weight, -0.05, 0.05)
    model.embed.weight[model.embed.padding_idx].zero_()  # never trained or used at real positions
    lstm, u = model.lstm, model.lstm.hidden_size
    nn.init.xavier_uniform_(lstm.weight_ih_l0)
    # Keras draws one orthogonal [U, 4U] matrix; PyTorch stores its transpose
    lstm.weight_hh_l0.copy_(nn.init.orthogonal_(torch.empty(u, 4 * u)).T)
    nn.init.zeros_(lstm.bias_ih_l0)
    nn.init.zeros_(lstm.bias_hh_l0)
    lstm.bias_ih_l0[u:2 * u] = 1.0  # unit_forget_bias; b_hh stays 0, so the gate's total bias is 1


CONCAT = dict(fusion="concat", dropout_placement="late")  # seed 000's PyTorch model, against MERGE's defaults


@register("torch_merge", family=MERGE,
          description="seed 000's option 1, port the Keras model: its merge model in PyTorch (add, early dropout)")
def torch_merge(spec: ModelSpec, **hp) -> MergeCaptioner:
    return MergeCaptioner(spec, **hp)


@register("torch_merge_packed", family=MERGE, defaults=dict(masking="packed"),
          description="seed 000's option 4, pack the padded sequences: torch_merge with packed sequences")
def torch_merge_packed(spec: ModelSpec, **hp) -> MergeCaptioner:
    return MergeCaptioner(spec, **hp)


@register("torch_concat", family=MERGE, defaults=CONCAT,
          description="seed 000's PyTorch model: concat fusion (512), late dropout")
def torch_concat(spec: ModelSpec, **hp) -> MergeCaptioner:
    return MergeCaptioner(spec, **hp)
