"""Batched beam search, written once for every backend.

The search runs in numpy over the log-probabilities a backend's `step` returns, so Keras and
PyTorch plugins are decoded by the same code, and a difference in captions can only come from the
models. Each image keeps `beam` hypotheses; all B*beam of them advance in one `step` call (one
batched forward per time step, not one per image). A finished hypothesis keeps its score and
only extends with <pad> at no cost. Final ranking uses GNMT length normalisation,
score / ((5 + length) / 6) ** alpha (alpha 0 = raw log-probability; seed 003 uses 0.6).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def beam_search(step: Callable, state, reorder: Callable, batch: int, beam: int, max_len: int,
                start_id: int, end_id: int, pad_id: int = 0, alpha: float = 0.0) -> np.ndarray:
    """step(state, tokens[B*beam]) -> (logits [B*beam, V] numpy, state); reorder(state, rows) -> state.

    `state` must already hold every image `beam` times (rows b*beam .. b*beam+beam-1).
    Returns [batch, steps] token ids of each image's best hypothesis.
    """
    scores = np.full((batch, beam), -np.inf)
    scores[:, 0] = 0.0  # all beams start identical: keep one, or the top-k fills with copies
    tokens = np.full(batch * beam, start_id, np.int64)
    seqs = np.zeros((batch * beam, 0), np.int64)
    finished = np.zeros(batch * beam, bool)
    for _ in range(max_len - 1):
        logits, state = step(state, tokens)
        logp = log_softmax(np.asarray(logits, np.float64))
        logp[finished] = -np.inf
        logp[finished, pad_id] = 0.0
        vocab = logp.shape[1]
        cand = (scores.reshape(-1, 1) + logp).reshape(batch, beam * vocab)
        top = np.argpartition(-cand, beam - 1, axis=1)[:, :beam]
        order = np.argsort(-np.take_along_axis(cand, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        scores = np.take_along_axis(cand, top, 1)
        rows = (np.arange(batch)[:, None] * beam + top // vocab).reshape(-1)
        tokens = (top % vocab).reshape(-1)
        state = reorder(state, rows)
        seqs = np.concatenate([seqs[rows], tokens[:, None]], 1)
        finished = finished[rows] | (tokens == end_id)
        if finished.all():
            break
    lengths = (seqs != pad_id).sum(1).reshape(batch, beam)
    ranked = scores / (((5.0 + lengths) / 6.0) ** alpha) if alpha else scores
    best = ranked.argmax(1)
    return seqs.reshape(batch, beam, -1)[np.arange(batch), best]
