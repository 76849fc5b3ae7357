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

Sampling draws each word from the model's distribution, reshaped as the captioning literature does:
temperature T (logits / T), top-k (only the k likeliest words), top-p (nucleus: the fewest likeliest
words whose probability reaches p). `n` captions per image are `n` rows of the batch, each with its
own draws. The draws come from a numpy Generator, so two frameworks whose logits agree sample the
same captions from the same seed (only a draw that lands within float error of a boundary between
two words can differ). Trigram blocking (beam search and sampling) forbids a word that would repeat
a trigram the caption already has, the usual cure for "a red circle and a red circle and ...".
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


def repeated_trigrams(seqs: np.ndarray, vocab: int) -> np.ndarray:
    """[rows, vocab] bool: the words that would make a trigram each row's sequence already has."""
    blocked = np.zeros((len(seqs), vocab), bool)
    if seqs.shape[1] < 3:
        return blocked
    last = seqs[:, -2:]
    for j in range(seqs.shape[1] - 2):  # every earlier bigram equal to the last one: its next word is banned
        rows = np.flatnonzero((seqs[:, j] == last[:, 0]) & (seqs[:, j + 1] == last[:, 1]))
        blocked[rows, seqs[rows, j + 2]] = True
    return blocked


def filter_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  blocked: np.ndarray | None = None) -> np.ndarray:
    """Log-probabilities to sample from: logits / temperature, the `blocked` words removed (unless that
    would remove them all), then everything outside the top-k and outside the nucleus (top-p) set to
    -inf; the likeliest word left always survives."""
    logp = log_softmax(np.asarray(logits, np.float64) / temperature)
    if blocked is not None:
        keep_all = blocked.all(1, keepdims=True)  # every word would repeat a trigram: block none
        logp = log_softmax(np.where(blocked & ~keep_all, -np.inf, logp))
    if top_k and top_k < logp.shape[1]:
        kth = -np.partition(-logp, top_k - 1, axis=1)[:, top_k - 1:top_k]
        logp = np.where(logp >= kth, logp, -np.inf)
    if top_p < 1.0:
        order = np.argsort(-logp, axis=1, kind="stable")
        probs = np.exp(np.take_along_axis(logp, order, 1))
        before = np.cumsum(probs, 1) - probs  # probability of the likelier words: keep while below p
        drop = np.zeros_like(logp, bool)
        np.put_along_axis(drop, order, before >= top_p, 1)
        logp = np.where(drop, -np.inf, logp)
    return log_softmax(logp)


def sample_search(step: Callable, state, batch: int, max_len: int, start_id: int, end_id: int, pad_id: int,
                  rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  block_trigrams: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """step(state, tokens[B]) -> (logits [B, V] numpy, state), B = batch rows (an image n times for n
    captions each). Returns ([batch, steps] token ids, pads after <end>; [batch] the model's own
    log-probability of each caption, before temperature and filtering)."""
    tokens = np.full(batch, start_id, np.int64)
    done = np.zeros(batch, bool)
    logprob = np.zeros(batch)
    out: list[np.ndarray] = []
    for _ in range(max_len - 1):
        logits, state = step(state, tokens)
        logits = np.asarray(logits, np.float64)
        blocked = repeated_trigrams(np.stack(out, 1), logits.shape[1]) if block_trigrams and out else None
        logp = filter_logits(logits, temperature, top_k, top_p, blocked)
        # inverse-CDF draw, one number in (0, 1] per row: the first word whose cumulative probability
        # reaches it, never a word of probability 0
        cdf = np.cumsum(np.exp(logp), 1)
        drawn = np.minimum((cdf < (1.0 - rng.random(batch))[:, None] * cdf[:, -1:]).sum(1), logp.shape[1] - 1)
        drawn = np.where(done, pad_id, drawn).astype(np.int64)
        logprob += np.where(done, 0.0, log_softmax(logits)[np.arange(batch), drawn])
        out.append(drawn)
        done |= drawn == end_id
        tokens = drawn
        if done.all():
            break
    return np.stack(out, 1), logprob


def beam_search(step: Callable, state, reorder: Callable, batch: int, beam: int, max_len: int,
                start_id: int, end_id: int, pad_id: int = 0, alpha: float = 0.0,
                block_trigrams: bool = False) -> np.ndarray:
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
        if block_trigrams:
            logp[repeated_trigrams(seqs[rows], logp.shape[1])] = -np.inf
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
