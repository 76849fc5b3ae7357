"""Seed 004's recurrent family is the same model in both frameworks: keras_rnn = torch_rnn,
keras_lstm = torch_lstm, keras_attention_lstm = torch_attention_lstm.

What is proven here:
- parameter counts follow closed forms at the embedded dataset's dims and at Flickr8k-like dims
  (seed 004's RegNetX-400MF: pooled D = 400, grid 16 x 400; VGG16 fc2 D = 4096; V = 8,485), and
  torch exceeds Keras by exactly PyTorch's second recurrent bias: H for nn.RNN, 4*H for nn.LSTM
  and nn.LSTMCell;
- weights copied torch -> Keras give the same teacher-forced logits (fp32, 1e-5) at every real
  position, and the same attention weights;
- the decoding API (init_state/step) reproduces the teacher-forced logits step by step in both;
- five Adam steps on the same batches (dropout 0, lstm_bias="one") give the same losses;
- packing (torch) and mask_zero (Keras) change no logit at a real position;
- attention_step's alpha is [B, P] and sums to 1 over positions.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugins.registry import ModelSpec, get_plugin
from shared_data.batches import iterate_batches
from shared_data.dataset import load_dataset

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from tests.parity import (  # noqa: E402
    assert_forward_parity,
    assert_same_losses_over_steps,
    assert_stepwise_matches_teacher_forcing,
    embedding_to_keras,
    linear_to_dense,
    n_params,
    recurrent_to_keras,
)

KINDS = ["rnn", "lstm", "attention_lstm"]
SMALL = dict(embed_dim=32, hidden_dim=48)  # small, for speed; the closed forms cover the defaults


def closed_form(kind: str, framework: str, V: int, D: int = 0, C: int = 0, E: int = 256, H: int = 512) -> int:
    """feat_proj + embedding + recurrence + output layer; Keras' recurrent layers carry one bias."""
    head = H * V + V
    if kind == "rnn":
        n = D * H + H + V * E + (E * H + H * H + H) + head
    elif kind == "lstm":
        n = D * H + H + V * E + 4 * H * (E + H) + 4 * H + head
    else:  # the LSTMCell's input is [embedding, context]: E + H wide
        n = C * H + H + V * E + 4 * H * (E + H + H) + 4 * H + head
    return n + (second_bias(kind, H) if framework == "torch" else 0)


def second_bias(kind: str, H: int) -> int:
    """PyTorch's b_hh beside b_ih: H for nn.RNN, 4*H for nn.LSTM / nn.LSTMCell (one per gate)."""
    return H if kind == "rnn" else 4 * H


def test_closed_forms_at_the_default_hyperparameters():
    """E = 256, H = 512 (seed 004's wordvec_dim and hidden_dim), written out."""
    for D, C, V in [(192, 32, 176), (400, 400, 8485)]:
        assert closed_form("rnn", "keras", V, D=D) == 512 * D + 769 * V + 394_240
        assert closed_form("lstm", "keras", V, D=D) == 512 * D + 769 * V + 1_575_424
        assert closed_form("attention_lstm", "keras", V, C=C) == 512 * C + 769 * V + 2_624_000
    assert closed_form("rnn", "torch", 176, D=192) - closed_form("rnn", "keras", 176, D=192) == 512
    assert closed_form("lstm", "torch", 176, D=192) - closed_form("lstm", "keras", 176, D=192) == 2048
    # seed 004's own attention model at Flickr8k's vocabulary: 16 RegNet positions of 400 channels
    assert closed_form("attention_lstm", "keras", 8485, C=400) == 9_353_765


# (V, D, spatial): the embedded dataset's grid features; seed 004's RegNetX-400MF at Flickr8k's
# vocabulary (pooled 400, grid 16 x 400); VGG16 fc2 (4096, no grid: rnn and lstm only)
DIMS = {"embedded": (176, 192, (64, 32)), "flickr8k_regnet": (8485, 400, (16, 400)),
        "flickr8k_vgg16": (8485, 4096, None)}
CASES = [(kind, dims) for dims in DIMS for kind in KINDS if DIMS[dims][2] is not None or kind != "attention_lstm"]


@pytest.mark.parametrize("framework", ["keras", "torch"])
@pytest.mark.parametrize("kind, dims", CASES)
def test_parameter_counts_match_closed_forms(framework, kind, dims):
    V, D, grid = DIMS[dims]
    C = grid[1] if grid else 0
    spatial = grid if kind == "attention_lstm" else None
    spec = ModelSpec(vocab_size=V, global_dim=D, spatial_shape=spatial, max_length=37)
    model = get_plugin(f"{framework}_{kind}").build(spec)
    assert n_params(model) == closed_form(kind, framework, V, D=D, C=C)


def copy_torch_to_keras(t, k) -> None:
    linear_to_dense(k.feat_proj, t.feat_proj)
    embedding_to_keras(k.embed, t.embed)
    if hasattr(t, "rnn"):
        recurrent_to_keras(k.rnn, t.rnn)
    else:
        recurrent_to_keras(k.cell, t.cell, suffix="")
    linear_to_dense(k.out, t.out)


@pytest.fixture(scope="module")
def data(small_dataset):
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    b = next(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0))
    spec = ModelSpec(len(ds.vocab), b.global_feats.shape[1], b.spatial_feats.shape[1:], ds.max_length)
    return ds, feats, spec, b


def pair(spec, kind, **hp):
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    t = get_plugin(f"torch_{kind}").build(spec, **SMALL, **hp).eval()
    k = get_plugin(f"keras_{kind}").build(spec, **SMALL, **{k: v for k, v in hp.items() if k != "lstm_bias"})
    copy_torch_to_keras(t, k)
    return t, k


@pytest.mark.parametrize("kind", KINDS)
def test_forward_parity_after_weight_transfer(data, kind):
    _, _, spec, b = data
    t, k = pair(spec, kind)
    assert n_params(t) - n_params(k) == second_bias(kind, SMALL["hidden_dim"])
    assert_forward_parity(t, k, b)


@pytest.mark.parametrize("kind", KINDS)
def test_stepwise_decoding_matches_teacher_forcing(data, kind):
    """The decoding step API computes the same logits as the whole-sequence forward pass."""
    _, _, spec, b = data
    t, k = pair(spec, kind)
    # every caption is real up to its shortest input length; past it, packing leaves pads at 0
    steps = int((b.lengths - 1).min())
    assert steps >= 3
    assert_stepwise_matches_teacher_forcing(t, k, b, steps=steps)


def test_attention_weights_sum_to_one_and_agree(data):
    _, _, spec, b = data
    t, k = pair(spec, "attention_lstm")
    tokens = b.inputs[:, 0]
    with torch.no_grad():
        state = t.init_state(torch.from_numpy(b.global_feats), torch.from_numpy(b.spatial_feats))
        for _ in range(3):  # a few steps, so alpha comes from a learned h, not only from h0
            logits, state, alpha = t.attention_step(state, torch.from_numpy(tokens).long())
    kstate = k.init_state(b.global_feats, b.spatial_feats)
    for _ in range(3):
        klogits, kstate, kalpha = k.attention_step(kstate, tokens)
    P = spec.spatial_shape[0]
    assert alpha.shape == (len(tokens), P) and tuple(kalpha.shape) == (len(tokens), P)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(len(tokens)), atol=1e-6, rtol=0)
    assert float(alpha.std()) > 0  # not uniform: the scores depend on the positions
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kalpha), alpha.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(klogits), logits.numpy(), atol=1e-5, rtol=0)
    assert [tuple(s.shape) for s in state] == [(len(tokens), P, SMALL["hidden_dim"])] + \
        [(len(tokens), SMALL["hidden_dim"])] * 2  # batch-first, as beam search needs


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_padding_handling_changes_no_logit_at_real_positions(data, kind):
    """torch: packed = none; Keras: mask_zero = none, at every real position."""
    _, _, spec, b = data
    real = b.mask.astype(bool)
    torch.manual_seed(0)
    packed = get_plugin(f"torch_{kind}").build(spec, **SMALL, masking="packed").eval()
    plain = get_plugin(f"torch_{kind}").build(spec, **SMALL, masking="none").eval()
    plain.load_state_dict(packed.state_dict())
    args = (torch.from_numpy(b.global_feats), None, torch.from_numpy(b.inputs).long(),
            torch.from_numpy(b.lengths - 1))
    with torch.no_grad():
        p, a = packed(*args), plain(*args)
    assert not torch.equal(p[~torch.from_numpy(real)], a[~torch.from_numpy(real)])  # packing did something
    torch.testing.assert_close(p[torch.from_numpy(real)], a[torch.from_numpy(real)], atol=1e-6, rtol=0)
    masked = get_plugin(f"keras_{kind}").build(spec, **SMALL, masking="mask")
    unmasked = get_plugin(f"keras_{kind}").build(spec, **SMALL, masking="none")
    unmasked.set_weights(masked.get_weights())
    x = {"global": b.global_feats, "tokens": b.inputs}
    lm, lu = (keras.ops.convert_to_numpy(m(x)) for m in (masked, unmasked))
    np.testing.assert_allclose(lm[real], lu[real], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_five_optimizer_steps_give_the_same_losses(data, kind):
    """Same init, same batches, dropout off: every step's loss agrees within relative 1e-5
    (measured: at most 4e-7, for all three; merge's test allows 5e-5).

    PyTorch's second recurrent bias is frozen at zero (`lstm_bias="one"`, Keras' layout: each of
    the two vectors moves by ~lr per Adam step, their sum twice as fast as Keras' one bias), and
    assert_same_losses_over_steps sets Adam's eps to 1e-12 (where eps enters differs)."""
    ds, feats, spec, _ = data
    t, k = pair(spec, kind, dropout=0.0, lstm_bias="one")
    assert_same_losses_over_steps(t, k, ds, feats, rel=1e-5)
