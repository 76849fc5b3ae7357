"""Helpers for the framework-parity tests (tests/test_parity_*.py): weight transfer between the
layouts of torch.nn and Keras layers, and the three checks every Keras/PyTorch pair must pass.

Layout facts the converters encode: Linear weights are [out, in], Dense kernels [in, out]; both
LSTMs order the gates i, f, g(c), o, and Keras' single bias is PyTorch's b_ih + b_hh; a PyTorch
LSTMCell/RNN has the same layout as a one-layer nn.LSTM/nn.RNN without the `_l0` suffix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared_data.batches import Batch, iterate_batches


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def linear_to_dense(dense, linear: torch.nn.Linear) -> None:
    dense.set_weights([numpy(linear.weight).T, numpy(linear.bias)] if linear.bias is not None
                      else [numpy(linear.weight).T])


def embedding_to_keras(emb_layer, emb: torch.nn.Embedding) -> None:
    emb_layer.set_weights([numpy(emb.weight)])


def recurrent_to_keras(keras_layer, module: torch.nn.Module, suffix: str = "_l0") -> None:
    """nn.LSTM / nn.RNN / nn.GRU-free recurrent weights (or the *Cell versions with suffix="")
    into keras LSTM/SimpleRNN (or their cells): kernel, recurrent kernel, one summed bias."""
    w_ih = getattr(module, f"weight_ih{suffix}")
    w_hh = getattr(module, f"weight_hh{suffix}")
    b_ih = getattr(module, f"bias_ih{suffix}")
    b_hh = getattr(module, f"bias_hh{suffix}")
    keras_layer.set_weights([numpy(w_ih).T, numpy(w_hh).T, numpy(b_ih + b_hh)])


def n_params(model) -> int:
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    return model.count_params()


def keras_inputs(b: Batch) -> dict:
    x = {"global": b.global_feats, "tokens": b.inputs}
    if b.spatial_feats is not None:
        x["spatial"] = b.spatial_feats
    return x


def torch_logits(model, b: Batch) -> np.ndarray:
    spatial = None if b.spatial_feats is None else torch.from_numpy(b.spatial_feats)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(b.global_feats), spatial, torch.from_numpy(b.inputs).long(),
                           torch.from_numpy(b.lengths - 1))
    return numpy(out[0] if isinstance(out, tuple) else out)


def keras_logits(model, b: Batch) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(model(keras_inputs(b), training=False))


def assert_forward_parity(t, k, b: Batch, atol: float = 1e-5) -> None:
    """Teacher-forced logits agree at every real (non-pad) position."""
    lt, lk = torch_logits(t, b), keras_logits(k, b)
    assert lt.shape == lk.shape == (*b.inputs.shape, lt.shape[-1])
    real = b.mask.astype(bool)
    np.testing.assert_allclose(lk[real], lt[real], atol=atol, rtol=0)


def assert_stepwise_matches_teacher_forcing(t, k, b: Batch, steps: int = 4, atol: float = 1e-5) -> None:
    """Both models' decoding step API gives the torch teacher-forced logits, step by step."""
    import keras

    full = torch.from_numpy(torch_logits(t, b))
    spatial = None if b.spatial_feats is None else torch.from_numpy(b.spatial_feats)
    with torch.no_grad():
        state = t.init_state(torch.from_numpy(b.global_feats), spatial)
        for s in range(steps):
            logits, state = t.step(state, torch.from_numpy(b.inputs[:, s]).long())
            torch.testing.assert_close(logits, full[:, s], atol=atol, rtol=0)
    kstate = k.init_state(b.global_feats, b.spatial_feats)
    for s in range(steps):
        klogits, kstate = k.step(kstate, b.inputs[:, s])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(klogits), full[:, s].numpy(), atol=atol, rtol=0)


def assert_same_losses_over_steps(t, k, ds, feats, lr: float = 3e-3, steps: int = 5, batch_size: int = 32,
                                  rel: float = 5e-5, min_drop: float = 0.05) -> list[float]:
    """Same init, same batches, dropout off (the caller builds t and k so): every step's training loss
    agrees within `rel`. Adam eps = 1e-12 makes the one difference in Adam's formula negligible
    (backends/common.py). As in the harness, torch gets batches cut to their longest caption and
    Keras the same captions padded to max_length. Returns the torch losses."""
    from backends.common import OptimConfig
    from backends.keras import train as ktrain
    from backends.torch import train as ttrain

    cfg = OptimConfig(lr=lr, eps=1e-12)
    opt = ttrain.make_optimizer(t, cfg)
    ktrain.compile_model(k, cfg)
    cut = list(iterate_batches(ds, "train", feats, batch_size=batch_size, seed=0, epoch=0))[:steps]
    padded = list(iterate_batches(ds, "train", feats, batch_size=batch_size, seed=0, epoch=0, pad_to_max=True))
    losses_t = [ttrain.train_step(t, opt, b, cfg, torch.device("cpu")) for b in cut]
    losses_k = [ktrain.train_step(k, b) for b in padded[:steps]]
    assert losses_t[-1] < losses_t[0] - min_drop  # it learned: not a comparison between two no-ops
    for step, (lt, lk) in enumerate(zip(losses_t, losses_k, strict=True)):
        assert lk == pytest.approx(lt, rel=rel), f"step {step}: torch {lt:.6f} keras {lk:.6f}"
    return losses_t


def _torch_leaves(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that own parameters, in the order the model registered them."""
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def _keras_leaves(model) -> list:
    """The layers that own weights, in the order the model tracked them; a recurrent layer stands for its
    cell. A layer with weights of its own beside weighted sublayers has no automatic counterpart."""
    import keras

    leaves, cells = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) in cells or not layer.weights:
            continue
        if isinstance(layer, keras.layers.RNN):
            cells.add(id(layer.cell))
            leaves.append(layer)
            continue
        children = [c for c in layer._flatten_layers(include_self=False, recursive=False) if c.weights]
        if children:
            if len(layer.weights) != sum(len(c.weights) for c in children):
                raise NotImplementedError(f"{type(layer).__name__} has weights of its own beside its sublayers'")
            continue  # its sublayers come next
        leaves.append(layer)
    return leaves


def _gru_gates(w: np.ndarray) -> np.ndarray:
    """PyTorch orders a GRU's gates r, z, n along axis 0; Keras z, r, h."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _transfer_one(layer, module: torch.nn.Module) -> None:
    import keras

    kind = type(module)
    if isinstance(module, torch.nn.Linear):
        return linear_to_dense(layer, module)
    if kind is torch.nn.Embedding:
        return embedding_to_keras(layer, module)
    if kind is torch.nn.LayerNorm:
        return layer.set_weights([numpy(module.weight), numpy(module.bias)])
    if kind in (torch.nn.LSTM, torch.nn.RNN, torch.nn.LSTMCell, torch.nn.RNNCell):
        if getattr(module, "num_layers", 1) != 1 or getattr(module, "bidirectional", False):
            raise NotImplementedError(f"{kind.__name__} with several layers or directions")
        return recurrent_to_keras(layer, module, "" if kind in (torch.nn.LSTMCell, torch.nn.RNNCell) else "_l0")
    if kind in (torch.nn.GRU, torch.nn.GRUCell):
        suffix = "" if kind is torch.nn.GRUCell else "_l0"
        cell = layer.cell if isinstance(layer, keras.layers.RNN) else layer
        if not cell.reset_after:
            raise NotImplementedError("a Keras GRU without reset_after has no PyTorch counterpart")
        w_ih, w_hh = (numpy(getattr(module, f"weight_{x}{suffix}")) for x in ("ih", "hh"))
        b_ih, b_hh = (numpy(getattr(module, f"bias_{x}{suffix}")) for x in ("ih", "hh"))
        return layer.set_weights([_gru_gates(w_ih).T, _gru_gates(w_hh).T,
                                  np.stack([_gru_gates(b_ih), _gru_gates(b_hh)])])
    raise NotImplementedError(f"no automatic transfer for torch.nn.{kind.__name__}")


def transfer_in_layer_order(t: torch.nn.Module, k) -> None:
    """Copy a PyTorch model's weights into its Keras twin with no converter of the family's own: the layers
    that own weights are paired in the order each model created them (Linear-Dense, Embedding, LayerNorm,
    one-layer RNN/LSTM/GRU and their cells). Raises NotImplementedError where that cannot work (a layer
    type it does not know, or the two orders differ), so that a family says it needs its own converter."""
    tl, kl = _torch_leaves(t), _keras_leaves(k)
    if len(tl) != len(kl):
        raise NotImplementedError(f"{len(tl)} PyTorch modules with weights against {len(kl)} Keras layers")
    for layer, module in zip(kl, tl, strict=True):
        try:
            _transfer_one(layer, module)
        except ValueError as e:  # shapes disagree: the orders differ
            raise NotImplementedError(f"{type(module).__name__} -> {type(layer).__name__}: {e}") from None
