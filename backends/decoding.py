"""Batched greedy decoding and beam search, written once for every backend.

The search runs in numpy over the log-probabilities a backend's `step` returns, so Keras and
PyTorch plugins are decoded by the same code, and a difference in captions can only come from the
models. Each image keeps `beam` hypotheses; all B*beam of them advance in one `step` call (one
batched forward per time step, not one per image). A finished hypothesis keeps its score and
only extends with <pad> at no cost; an image whose hypotheses have all finished leaves the batch,
so later steps compute only the images still searching (as a one-image search would stop).
Final ranking uses GNMT length normalisation,
score / ((5 + length) / 6) ** alpha (alpha 0 = raw log-probability; seed 003 uses 0.6).

Greedy decoding is the same loop with the argmax taken by the backend (on its device: only the [B]
chosen tokens leave it, not the [B, V] logits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def greedy_search(step: Callable, state, batch: int, max_len: int, start_id: int, end_id: int,
                  pad_id: int = 0) -> np.ndarray:
    """step(state, tokens[B] int64) -> (argmax tokens [B] numpy, state).

    Returns [batch, steps] int64 token ids, steps <= max_len - 1: <pad> after an image's <end>, and
    the loop stops once every image has ended."""
    tokens = np.full(batch, start_id, np.int64)
    done = np.zeros(batch, bool)
    out = []
    for _ in range(max_len - 1):
        best, state = step(state, tokens)
        tokens = np.where(done, pad_id, np.asarray(best)).astype(np.int64)
        out.append(tokens)
        done |= tokens == end_id
        if done.all():
            break
    return np.stack(out, 1)


def greedy_attention_search(step: Callable, state, batch: int, max_len: int,
                            start_id: int) -> tuple[np.ndarray, np.ndarray]:
    """step(state, tokens[B] int64) -> (argmax tokens [B] numpy, state, alpha [B, positions] numpy).

    Every one of the max_len - 1 steps, none masked (the attention behind each word, <end> and after
    included): ([batch, max_len-1] int64 tokens, [batch, max_len-1, positions] alphas)."""
    tokens = np.full(batch, start_id, np.int64)
    out, alphas = [], []
    for _ in range(max_len - 1):
        best, state, alpha = step(state, tokens)
        tokens = np.asarray(best).astype(np.int64)
        out.append(tokens)
        alphas.append(np.asarray(alpha))
    return np.stack(out, 1), np.stack(alphas, 1)


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
    live = np.arange(batch)  # images still searching: `state` holds their rows only, in this order
    for _ in range(max_len - 1):
        n = len(live)
        rows = (live[:, None] * beam + np.arange(beam)).reshape(-1)  # their rows among all B*beam
        logits, state = step(state, tokens[rows])
        logp = log_softmax(np.asarray(logits, np.float64))
        logp[finished[rows]] = -np.inf
        logp[finished[rows], pad_id] = 0.0
        vocab = logp.shape[1]
        cand = (scores[live].reshape(-1, 1) + logp).reshape(n, beam * vocab)
        top = np.argpartition(-cand, beam - 1, axis=1)[:, :beam]
        order = np.argsort(-np.take_along_axis(cand, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        scores[live] = np.take_along_axis(cand, top, 1)
        src = (np.arange(n)[:, None] * beam + top // vocab).reshape(-1)  # parent rows within `state`
        new = (top % vocab).reshape(-1)
        state = reorder(state, src)
        column = np.full(batch * beam, pad_id, np.int64)  # images already done extend with <pad>
        column[rows] = new
        seqs[rows] = seqs[rows[src]]
        seqs = np.concatenate([seqs, column[:, None]], 1)
        finished[rows] = finished[rows[src]] | (new == end_id)
        tokens[rows] = new
        done = finished[rows].reshape(n, beam).all(1)
        if done.all():
            break
        if done.any():  # drop finished images from the batch: later steps compute only live rows
            keep = np.flatnonzero(~done)
            state = reorder(state, (keep[:, None] * beam + np.arange(beam)).reshape(-1))
            live = live[keep]
    lengths = (seqs != pad_id).sum(1).reshape(batch, beam)
    ranked = scores / (((5.0 + lengths) / 6.0) ** alpha) if alpha else scores
    best = ranked.argmax(1)
    return seqs.reshape(batch, beam, -1)[np.arange(batch), best]
