"""keras_show_attend_tell = torch_show_attend_tell: the same model in two frameworks.

What is proven here:
- parameter counts follow a closed form at the embedded dataset's dims (V=176, P=64, C=32) and at
  Flickr8k's with the tutorial's features (V=8485, P=196, C=2048: resnet101 at 14x14; P enters no
  weight shape): with the default sizes (512) the torch model has
  1025*V + 4097*C + 2,365,953 parameters (2,677,457 and 19,453,734), and exactly 4 * decoder_dim
  (2,048) more than its Keras twin: PyTorch's LSTMCell carries a second bias vector (bias_hh);
- weights copied torch -> Keras give the same teacher-forced logits (fp32, 1e-5) at every real
  position, and init_state/step reproduce them step by step in both frameworks;
- attention_step's alpha is [B, P], sums to 1 over positions, and is the same in both frameworks;
- the doubly stochastic regulariser is positive, counts only real steps (the same captions padded to
  max_length give the same value as cut to the longest caption), and is what training adds
  to the CE in both frameworks (torch: masked_loss with_aux minus without; Keras: train_on_batch minus
  test_on_batch on the same weights);
- five Adam steps on the same batches, dropout off, give the same losses, regulariser included.
"""

from __future__ import annotations

import numpy as np
import pytest

import backends
from plugins.registry import ModelSpec, get_plugin
from shared_data.batches import iterate_batches
from shared_data.dataset import load_dataset

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from backends.common import OptimConfig  # noqa: E402
from tests.parity import (  # noqa: E402
    assert_forward_parity,
    assert_stepwise_matches_teacher_forcing,
    embedding_to_keras,
    keras_inputs,
    linear_to_dense,
    n_params,
    recurrent_to_keras,
)

SMALL = dict(embed_dim=32, attention_dim=32, decoder_dim=32)  # fast, and every code path still runs


def closed_form(name: str, V: int, C: int, E: int = 512, A: int = 512, H: int = 512) -> int:
    attention = (C * A + A) + (H * A + A) + (A + 1)  # encoder_att, decoder_att, full_att
    lstm_cell = 4 * H * (E + C) + 4 * H * H + 4 * H  # Keras: one bias vector
    init = 2 * (C * H + H)  # init_h, init_c
    gate = H * C + C  # f_beta
    total = attention + V * E + lstm_cell + init + gate + (H * V + V)
    return total + (4 * H if name.startswith("torch") else 0)  # PyTorch's bias_hh


@pytest.mark.parametrize("V, P, C", [(176, 64, 32), (8485, 196, 2048)])
@pytest.mark.parametrize("name", ["keras_show_attend_tell", "torch_show_attend_tell"])
def test_parameter_counts_match_closed_forms(name, V, P, C):
    spec = ModelSpec(vocab_size=V, global_dim=192, spatial_shape=(P, C), max_length=37)
    assert n_params(get_plugin(name).build(spec)) == closed_form(name, V, C)


def test_closed_form_in_numbers():
    """The same closed form with the default sizes, at the two sets of dims."""
    for V, C, torch_count in [(176, 32, 2_677_457), (8485, 2048, 19_453_734)]:
        assert closed_form("torch_show_attend_tell", V, C) == 1025 * V + 4097 * C + 2_365_953 == torch_count
        assert torch_count - closed_form("keras_show_attend_tell", V, C) == 4 * 512


def copy_torch_to_keras(t, k) -> None:
    for name in ("encoder_att", "decoder_att", "full_att"):
        linear_to_dense(getattr(k.attention, name), getattr(t.attention, name))
    embedding_to_keras(k.embedding, t.embedding)
    recurrent_to_keras(k.decode_step, t.decode_step, suffix="")
    for name in ("init_h", "init_c", "f_beta", "fc"):
        linear_to_dense(getattr(k, name), getattr(t, name))


@pytest.fixture(scope="module")
def data(small_dataset):
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    spec = ModelSpec.of(ds, feats)
    return ds, feats, spec


@pytest.fixture(scope="module")
def batch(data):
    ds, feats, spec = data
    return spec, next(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0))


def twins(spec, **hp):
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    t = get_plugin("torch_show_attend_tell").build(spec, **SMALL, **hp)
    k = get_plugin("keras_show_attend_tell").build(spec, **SMALL, **{k: v for k, v in hp.items() if k != "lstm_bias"})
    copy_torch_to_keras(t, k)
    return t, k


def test_forward_parity_after_weight_transfer(batch):
    spec, b = batch
    t, k = twins(spec)
    assert n_params(t) - n_params(k) == 4 * SMALL["decoder_dim"]
    assert_forward_parity(t.eval(), k, b)


def test_stepwise_decoding_matches_teacher_forcing(batch):
    spec, b = batch
    t, k = twins(spec)
    assert_stepwise_matches_teacher_forcing(t.eval(), k, b, steps=5)


def test_attention_step_gives_a_distribution_over_positions(batch):
    spec, b = batch
    t, k = twins(spec)
    positions = spec.spatial_shape[0]
    tokens = np.full(len(b.inputs), spec.start_id)
    with torch.no_grad():
        state = t.eval().init_state(None, torch.from_numpy(b.spatial_feats))
        logits, state, alpha = t.attention_step(state, torch.from_numpy(tokens).long())
    assert logits.shape == (len(tokens), spec.vocab_size) and alpha.shape == (len(tokens), positions)
    torch.testing.assert_close(alpha.sum(1), torch.ones(len(tokens)), atol=1e-6, rtol=0)
    assert len(state) == 4 and all(x.shape[0] == len(tokens) for x in state)  # batch-first, for beam search
    _, _, kalpha = k.attention_step(k.init_state(b.global_feats, b.spatial_feats), tokens.astype(np.int32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kalpha), alpha.numpy(), atol=1e-6, rtol=0)


def reference_regulariser(t, b, alpha_c: float = 1.0) -> float:
    """The tutorial's formula from alphas collected with attention_step, over each caption's real steps."""
    with torch.no_grad():
        state = t.eval().init_state(None, torch.from_numpy(b.spatial_feats))
        alphas = []
        for s in range(b.inputs.shape[1]):
            _, state, alpha = t.attention_step(state, torch.from_numpy(b.inputs[:, s]).long())
            alphas.append(alpha)
    alphas = torch.stack(alphas, 1).numpy()  # [B, T, P]
    summed = np.stack([alphas[i, :n].sum(0) for i, n in enumerate(b.lengths - 1)])  # decode lengths
    return alpha_c * float(((1.0 - summed) ** 2).mean())


def torch_losses(t, b) -> tuple[float, float]:
    """(CE, CE + regulariser) as the torch backend computes them, dropout off."""
    from backends.torch import train as ttrain

    tensors = ttrain.to_tensors(b, torch.device("cpu"))
    with torch.no_grad():
        t.train()  # where the regulariser is used; the caller builds t with dropout 0
        return float(ttrain.masked_loss(t, tensors)), float(ttrain.masked_loss(t, tensors, with_aux=True))


def test_regulariser_counts_only_real_steps(data):
    """torch's masked_loss adds exactly the tutorial's regulariser, and pads never enter it: the same
    captions padded to max_length (as the Keras backend feeds them) give the same CE and regulariser."""
    ds, feats, spec = data
    cut = next(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0))
    padded = next(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0, pad_to_max=True))
    assert cut.inputs.shape[1] < padded.inputs.shape[1]
    t, _ = twins(spec, dropout=0.0)
    expected = reference_regulariser(t, cut)
    assert expected > 0.1
    ce, total = torch_losses(t, cut)
    assert total - ce == pytest.approx(expected, rel=1e-5)
    ce_padded, total_padded = torch_losses(t, padded)
    assert ce_padded == pytest.approx(ce, rel=1e-6) and total_padded - ce_padded == pytest.approx(expected, rel=1e-5)


def test_five_optimizer_steps_give_the_same_losses(data):
    """Same init, same batches, dropout off: every step's loss (CE + regulariser) agrees within 5e-5 (relative),
    and in both frameworks the first step's training loss is the evaluation CE plus the tutorial's regulariser.

    As in the harness, torch gets batches cut to their longest caption and Keras the same captions
    padded to max_length (its time loop is unrolled for one fixed length). Aligned as in merge:
    PyTorch's second LSTMCell bias is frozen (lstm_bias="one") and Adam's eps is 1e-12 (backends/common.py).
    lr is 1e-2 because at 3e-3 this 32-unit model barely moves in five steps."""
    from backends.keras import train as ktrain
    from backends.torch import train as ttrain

    ds, feats, spec = data
    t, k = twins(spec, dropout=0.0, lstm_bias="one")
    cfg = OptimConfig(lr=1e-2, eps=1e-12)
    opt = ttrain.make_optimizer(t, cfg)
    ktrain.compile_model(k, cfg)
    cut = list(iterate_batches(ds, "train", feats, batch_size=32, seed=0, epoch=0))[:5]
    padded = list(iterate_batches(ds, "train", feats, batch_size=32, seed=0, epoch=0, pad_to_max=True))[:5]
    expected = reference_regulariser(t, cut[0])
    ce_t = torch_losses(t, cut[0])[0]
    ce_k = float(k.test_on_batch(keras_inputs(padded[0]), padded[0].targets, sample_weight=padded[0].mask))

    losses_t = [ttrain.train_step(t, opt, b, cfg, torch.device("cpu")) for b in cut]
    losses_k = [ktrain.train_step(k, b) for b in padded]
    assert losses_t[-1] < losses_t[0] - 0.1  # it learned: not a comparison between two no-ops
    for step, (lt, lk) in enumerate(zip(losses_t, losses_k, strict=True)):
        assert lk == pytest.approx(lt, rel=5e-5), f"step {step}: torch {lt:.6f} keras {lk:.6f}"
    # train_on_batch reports the loss of the forward pass before its update: the weights test_on_batch saw
    assert losses_t[0] - ce_t == pytest.approx(expected, rel=1e-4)
    assert losses_k[0] - ce_k == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_remat_recomputes_without_changing_the_run(data, framework):
    """remat=True (keras.remat / torch.utils.checkpoint around the attention scores) trades memory for
    compute: the same losses and weights after three steps, dropout included (to the bit in PyTorch)."""

    ds, feats, spec = data
    backend = backends.load(framework)
    plugin = get_plugin(f"{framework}_show_attend_tell")
    batches = list(iterate_batches(ds, "train", feats, batch_size=8, seed=0, epoch=0,
                                   pad_to_max=backend.FIXED_SHAPES))[:3]
    runs = []
    for remat in (False, True):
        runner = backend.Runner(plugin, spec, {**SMALL, "remat": remat}, seed=0, optim=OptimConfig(lr=3e-3))
        losses = [runner.train_step(b) for b in batches]
        weights = ([p.detach().numpy().copy() for p in runner.model.parameters()] if framework == "torch"
                   # full_att's bias shifts every attention score alike and softmax ignores a shift: its true
                   # gradient is zero, so Adam turns rounding noise into lr-sized steps that no order matches
                   else [keras.ops.convert_to_numpy(w) for w in runner.model.weights
                         if not w.path.endswith("full_att/bias")])
        runs.append((losses, weights))
    (plain, w_plain), (remat, w_remat) = runs
    if framework == "torch":  # the same kernels in the same order: the same bits
        assert plain == remat
        for a, b in zip(w_plain, w_remat, strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # TensorFlow's recompute_grad sums the gradients in another order: equal to rounding
        np.testing.assert_allclose(remat, plain, rtol=1e-6)
        for a, b in zip(w_plain, w_remat, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # Adam scales up rounding of tiny grads
