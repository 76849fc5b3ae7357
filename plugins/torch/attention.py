"""Show, Attend and Tell (soft attention) in PyTorch, as in sgrvinod's tutorial (seeds 001 and 002).

    spatial feats [B, P, C] --mean over P--> init_h, init_c: Linear(C, H) each -> h0, c0
    every step t, from the previous state h:
      encoder_att(feats) [B,P,A] + decoder_att(h) [B,1,A] -> ReLU -> full_att -> softmax over P -> alpha [B, P]
      context = sum_p alpha_p * feats_p  (C);  gate = sigmoid(f_beta(h))  (C)
      [embedding(word_t) (E) ; gate * context (C)] -> LSTMCell(E + C, H) -> h, c
      h -> Dropout -> fc: Linear(H, V) -> logits_t
    aux = alpha_c * mean over (B, P) of (1 - sum_t alpha_t)^2      (doubly stochastic regulariser)

The image enters only through the spatial features: the global vector is not used (the tutorial has
none; its mean over positions plays that role in init_h/init_c). Default sizes are the tutorial's
(embed, attention and decoder 512, dropout 0.5, alpha_c 1); its encoder_dim is C from the dataset
(2048 with resnet101 at 14x14, 32 with the embedded `grid` features). Mirror: plugins/keras/attention.py.

Teacher forcing is a Python loop over the T input positions with an LSTMCell (attention sits between
steps, so nn.LSTM cannot run the sequence). The tutorial sorts captions by length and shrinks the
batch at each step so that pads are never computed; that is an optimisation skipped here: every row
runs all T steps, and a pad position's output depends only on the real steps before it, so real
positions get exactly the tutorial's logits. Pads are then masked out of the loss (ignore_index)
and out of the regulariser, whose sum over t counts only steps t < lengths[b] (the tutorial's
decode lengths, i.e. the real targets). encoder_att(feats) does not depend on t: it is computed once
per sequence (and carried in the decoding state) instead of at every step, the same numbers.
Initialisation follows the tutorial's init_weights (embedding and fc weights U(-0.1, 0.1), fc bias 0),
PyTorch defaults elsewhere. `lstm_bias="one"` freezes LSTMCell's second bias (bias_hh) at zero: Keras'
single-bias layout, for exact step-by-step parity and as an ablation axis. `remat=True` recomputes the
attention scores' [B, P, A] activations in the backward pass (torch.utils.checkpoint) instead of
keeping one set per time step: the same run to the bit, for memory (measured at Flickr8k's shapes,
B 64, T 42: training peak 3,195 -> 3,112 MiB here, 8% slower; Keras' twin saves much more, see there).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from plugins.families.show_attend_tell import SHOW_ATTEND_TELL
from plugins.registry import ModelSpec, register


class Attention(nn.Module):
    """Additive attention over the P positions, given the previous decoder state."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, feats: torch.Tensor, h: torch.Tensor, enc_att: torch.Tensor | None = None,
                remat: bool = False):
        """feats [B, P, C], h [B, H] -> (context [B, C], alpha [B, P]). enc_att = encoder_att(feats)
        [B, P, A] when the caller has it: it does not depend on h, so a sequence needs it once.
        remat: recompute the [B, P, A] scores' activations in the backward pass instead of keeping
        them, the bulk of a training step's memory per time step (same values, more compute)."""
        if enc_att is None:
            enc_att = self.encoder_att(feats)
        if remat:
            scores = checkpoint(self.scores, enc_att, h, use_reentrant=False)
        else:
            scores = self.scores(enc_att, h)
        alpha = torch.softmax(scores, dim=1)
        # the weighted sum over P as one batched matmul [B,1,P] @ [B,P,C]: the tutorial's
        # (feats * alpha[..., None]).sum(1) is the same sum through a [B, P, C] temporary every step
        return torch.bmm(alpha[:, None], feats)[:, 0], alpha

    def scores(self, enc_att: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # relu in place: the sum is already a fresh [B, P, A] tensor, the largest of a decoding step;
        # a second one per step costs batched sampling more than the LSTM does (the same values)
        return self.full_att((enc_att + self.decoder_att(h)[:, None, :]).relu_())[..., 0]


class ShowAttendTell(nn.Module):
    FIXED_LENGTH = True  # a Python time loop: compiled for one length, batches keep max_length (backends.torch.runner)
    IMAGE_STATE = 2  # feats, encoder_att(feats): the image's own decoding state, never changed by step

    def __init__(self, spec: ModelSpec, embed_dim: int = 512, attention_dim: int = 512, decoder_dim: int = 512,
                 dropout: float = 0.5, alpha_c: float = 1.0, lstm_bias: str = "two", remat: bool = False):
        super().__init__()
        if spec.spatial_shape is None:
            raise ValueError("show_attend_tell needs spatial features [P, C]; the dataset's extractor has none")
        encoder_dim = spec.spatial_shape[1]
        self.alpha_c, self.remat = alpha_c, remat
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(spec.vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.fc = nn.Linear(decoder_dim, spec.vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.fc.weight, -0.1, 0.1)
        nn.init.zeros_(self.fc.bias)
        if lstm_bias == "one":
            # Keras' layout: b_ih + b_hh is one vector there, and Adam moves each of PyTorch's two
            # vectors by ~lr per step, i.e. the sum by ~2*lr. Freezing b_hh at 0 removes that difference.
            nn.init.zeros_(self.decode_step.bias_hh)
            self.decode_step.bias_hh.requires_grad_(False)
        elif lstm_bias != "two":
            raise ValueError(f"lstm_bias must be 'two' (PyTorch) or 'one' (Keras), got {lstm_bias!r}")

    def init_hidden_state(self, feats: torch.Tensor):
        mean = feats.mean(1)
        return self.init_h(mean), self.init_c(mean)

    def decode(self, feats, enc_att, emb_t, h, c):
        """One step: attend with the previous h, gate the context, advance the LSTMCell, score words."""
        context, alpha = self.attention(feats, h, enc_att, remat=self.remat and self.training)
        gate = torch.sigmoid(self.f_beta(h))
        h, c = self.decode_step(torch.cat([emb_t, gate * context], dim=1), (h, c))
        return self.fc(self.dropout(h)), h, c, alpha

    def forward(self, global_feats: torch.Tensor, spatial_feats: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor):
        """Teacher forcing: tokens [B, T] -> (logits [B, T, V], doubly stochastic regulariser)."""
        feats = spatial_feats
        enc_att = self.attention.encoder_att(feats)
        h, c = self.init_hidden_state(feats)
        emb = self.embedding(tokens)
        logits, alphas = [], []
        for t in range(tokens.shape[1]):
            logit, h, c, alpha = self.decode(feats, enc_att, emb[:, t], h, c)
            logits.append(logit)
            alphas.append(alpha)
        alphas = torch.stack(alphas, 1)  # [B, T, P]
        steps = tokens.shape[1]
        real = (torch.arange(steps)[None, :] < lengths.cpu()[:, None]).to(alphas)  # [B, T]: t < decode length
        aux = self.alpha_c * ((1.0 - (alphas * real[..., None]).sum(1)) ** 2).mean()
        return torch.stack(logits, 1), aux

    # --- step-wise decoding: state = (feats, encoder_att(feats), h, c), every tensor batch-first so
    # that the backend's beam search can reorder any plugin's state with one index_select
    def init_state(self, global_feats: torch.Tensor | None, spatial_feats: torch.Tensor):
        h, c = self.init_hidden_state(spatial_feats)
        return spatial_feats, self.attention.encoder_att(spatial_feats), h, c

    def attention_step(self, state, tokens: torch.Tensor):
        feats, enc_att, h, c = state
        logits, h, c, alpha = self.decode(feats, enc_att, self.embedding(tokens), h, c)
        return logits, (feats, enc_att, h, c), alpha

    def step(self, state, tokens: torch.Tensor):
        logits, state, _ = self.attention_step(state, tokens)
        return logits, state




@register("torch_show_attend_tell", family=SHOW_ATTEND_TELL,
          description="seeds 001/002: sgrvinod's Show, Attend and Tell decoder (soft attention, gate, alpha_c)")
def torch_show_attend_tell(spec: ModelSpec, **hp) -> ShowAttendTell:
    return ShowAttendTell(spec, **hp)
