"""Seed 004's recurrent family in PyTorch: vanilla RNN, LSTM and attention LSTM captioners.

rnn / lstm (the pooled image vector only):

    image (D) -> Linear(H) = h0   (affine, no activation: the seed's featureProjection; LSTM: c0 = 0)
    tokens -> Embedding(V, E, padding_idx=0) -> RNN(tanh, H) | LSTM(H) from h0 -> [Dropout] -> Linear(V)

attention_lstm (the P spatial vectors; the seed's 4x4 RegNet grid, here spec.spatial_shape):

    spatial (P, C) -> Linear(H) = A (P, H);   h0 = c0 = mean_p A
    step t:  alpha = softmax_p(<h_{t-1}, A_p> / sqrt(H));  ctx = sum_p alpha_p A_p
             h_t, c_t = LSTMCell([emb(w_t), ctx], (h_{t-1}, c_{t-1}))  -> [Dropout] -> Linear(V)

Taken from seed 004 (the RegNetX-400MF captioning exercise): the affine h0 without tanh, c0 = 0
for the LSTM, one projection A shared by attention and h0 = c0 = mean(A), the query h_{t-1}
scaled by 1/sqrt(H), the context fed back into the LSTM input (the seed's Wattn term: a kernel
over [x, ctx] is the same map) and logits from h_t alone. The seed has no dropout (default 0 here)
and no attention regulariser. Because the context of step t depends on h_{t-1}, attention_lstm
runs a cell loop over time; rnn and lstm run one nn.RNN/nn.LSTM call over the whole sequence.

Padding: outputs at real positions never depend on later pads (right-padded, left-to-right), so
`masking="none"` gives the same logits there as `packed`, which runs pack_padded_sequence so the
recurrence skips the pads' compute; the loss masks pads either way. The attention cell loop runs
over the pads too (their outputs are masked out of the loss). `lstm_bias="one"` freezes PyTorch's
second recurrent bias (b_hh) at zero: Keras' layout, for exact step-by-step parity.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from backends.torch.common import real_positions
from plugins.families.recurrent import ATTENTION_LSTM, RECURRENT
from plugins.registry import ModelSpec, register


def one_bias(module: nn.Module, lstm_bias: str, suffix: str = "_l0") -> None:
    """lstm_bias="one": Keras has one bias (b_ih + b_hh); Adam moves each of PyTorch's two by ~lr per
    step, so their sum by ~2*lr. Freezing b_hh at zero removes that difference."""
    if lstm_bias == "one":
        b_hh = getattr(module, f"bias_hh{suffix}")
        nn.init.zeros_(b_hh)
        b_hh.requires_grad_(False)
    elif lstm_bias != "two":
        raise ValueError(f"lstm_bias must be 'two' (PyTorch) or 'one' (Keras), got {lstm_bias!r}")


class RecurrentCaptioner(nn.Module):
    """cell="rnn" (tanh) or "lstm", initialised from the pooled image vector."""

    def __init__(self, spec: ModelSpec, cell: str = "lstm", embed_dim: int = 256, hidden_dim: int = 512,
                 dropout: float = 0.0, masking: str = "packed", lstm_bias: str = "two"):
        super().__init__()
        if cell not in ("rnn", "lstm") or masking not in ("none", "packed"):
            raise ValueError(f"bad recurrent hyperparameters: {cell=}, {masking=}")
        self.cell, self.masking = cell, masking
        self.feat_proj = nn.Linear(spec.global_dim, hidden_dim)
        self.embed = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=spec.pad_id)
        rnn = nn.RNN if cell == "rnn" else nn.LSTM  # nn.RNN's default nonlinearity is tanh, as in the seed
        self.rnn = rnn(embed_dim, hidden_dim, batch_first=True)
        one_bias(self.rnn, lstm_bias)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, spec.vocab_size)

    def initial(self, global_feats: torch.Tensor):
        """Batch-first initial state: (h0,) for the RNN, (h0, c0 = 0) for the LSTM, as in the seed."""
        h0 = self.feat_proj(global_feats)
        return (h0,) if self.cell == "rnn" else (h0, torch.zeros_like(h0))

    def run(self, x, state: tuple):
        hx = tuple(s[None].contiguous() for s in state)  # nn.RNN/nn.LSTM want [layers, B, H]
        y, hx = self.rnn(x, hx[0] if self.cell == "rnn" else hx)
        hx = (hx,) if self.cell == "rnn" else hx
        return y, tuple(s[0] for s in hx)

    def forward(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor | None, tokens: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens [B, T] -> logits [B, T, V]; training: [N, V] at the N real positions."""
        state = self.initial(global_feats)
        emb = self.embed(tokens)
        if self.masking == "packed":
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.run(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=tokens.shape[1])
        else:
            y, _ = self.run(emb, state)
        if self.training:  # the output layer on real positions only, [N, V] (see plugins/torch/merge.py)
            y = y[real_positions(tokens, lengths)]
        return self.out(self.drop(y))

    # --- step-wise decoding: state = (h,) or (h, c), every tensor batch-first
    def init_state(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor | None):
        return self.initial(global_feats)

    def step(self, state, tokens: torch.Tensor):
        y, state = self.run(self.embed(tokens)[:, None, :], state)
        return self.out(self.drop(y[:, 0])), state


class AttentionLSTMCaptioner(nn.Module):
    """Seed 004's attention LSTM: scaled dot-product attention on h_{t-1}, context into the LSTM input."""
    IMAGE_STATE = 1  # the projected grid: the image's own decoding state, never changed by step
    FIXED_LENGTH = True  # a Python time loop: compiled for one length, batches keep max_length (backends.torch.runner)

    def __init__(self, spec: ModelSpec, embed_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.0,
                 lstm_bias: str = "two"):
        super().__init__()
        if spec.spatial_shape is None:
            raise ValueError("attention_lstm needs spatial features (an extractor with a spatial grid)")
        self.hidden_dim = hidden_dim
        self.feat_proj = nn.Linear(spec.spatial_shape[1], hidden_dim)  # the seed's A = featureProjection(grid)
        self.embed = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=spec.pad_id)
        self.cell = nn.LSTMCell(embed_dim + hidden_dim, hidden_dim)  # input [x_t, ctx_t]: the seed's Wx and Wattn
        one_bias(self.cell, lstm_bias, suffix="")
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, spec.vocab_size)

    def attend(self, proj: torch.Tensor, h: torch.Tensor):
        """proj [B, P, H], h [B, H] -> context [B, H], alpha [B, P]."""
        # bmm of a row vector per image: on CPU 2-3x faster than the same einsum, forward and backward
        scores = torch.bmm(h[:, None], proj.transpose(1, 2))[:, 0] / math.sqrt(self.hidden_dim)
        alpha = scores.softmax(-1)
        return torch.bmm(alpha[:, None], proj)[:, 0], alpha

    def cell_step(self, proj, h, c, emb):
        ctx, alpha = self.attend(proj, h)
        h, c = self.cell(torch.cat([emb, ctx], -1), (h, c))
        return h, c, alpha

    def forward(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens [B, T] -> logits [B, T, V]; training: [N, V] at the N real positions."""
        proj, h, c = self.init_state(global_feats, spatial_feats)
        emb = self.embed(tokens)
        hs = []
        for t in range(tokens.shape[1]):
            h, c, _ = self.cell_step(proj, h, c, emb[:, t])
            hs.append(h)
        y = torch.stack(hs, 1)
        if self.training:  # the output layer on real positions only, [N, V] (see plugins/torch/merge.py)
            y = y[real_positions(tokens, lengths)]
        return self.out(self.drop(y))

    # --- step-wise decoding: state = (A [B, P, H], h, c), every tensor batch-first
    def init_state(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor):
        proj = self.feat_proj(spatial_feats)
        h0 = proj.mean(1)
        return proj, h0, h0.clone()  # the seed: c0 = h0 = mean of the projected grid

    def attention_step(self, state, tokens: torch.Tensor):
        proj, h, c = state
        h, c, alpha = self.cell_step(proj, h, c, self.embed(tokens))
        return self.out(self.drop(h)), (proj, h, c), alpha

    def step(self, state, tokens: torch.Tensor):
        logits, state, _ = self.attention_step(state, tokens)
        return logits, state




@register("torch_rnn", family=RECURRENT,
          description="seed 004: vanilla tanh RNN, h0 = affine(pooled image), packed sequences")
def torch_rnn(spec: ModelSpec, **hp) -> RecurrentCaptioner:
    return RecurrentCaptioner(spec, cell="rnn", **hp)


@register("torch_lstm", family=RECURRENT,
          description="seed 004: LSTM, h0 = affine(pooled image), c0 = 0, packed sequences")
def torch_lstm(spec: ModelSpec, **hp) -> RecurrentCaptioner:
    return RecurrentCaptioner(spec, cell="lstm", **hp)


@register("torch_attention_lstm", family=ATTENTION_LSTM,
          description="seed 004: LSTM with scaled dot-product attention over the spatial grid fed into its input")
def torch_attention_lstm(spec: ModelSpec, **hp) -> AttentionLSTMCaptioner:
    return AttentionLSTMCaptioner(spec, **hp)
