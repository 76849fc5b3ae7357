"""Batched greedy decoding and beam search, written once for every backend.

The search runs in numpy over the log-probabilities a backend's `step` returns, so Keras and
PyTorch plugins are decoded by the same code, and a difference in captions can only come from the
models. Each image keeps `beam` hypotheses; all B*beam of them advance in one `step` call (one
batched forward per time step, not one per image). A finished hypothesis keeps its score and
only extends with <pad> at no cost; an image whose hypotheses have all finished leaves the batch,
so later steps compute only the images still searching (as a one-image search would stop).
Final ranking uses GNMT length normalisation,
score / ((5 + length) / 6) ** alpha (alpha 0 = raw log-probability; 0.6 is a common choice).

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
from dataclasses import dataclass

import numpy as np

METHODS = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class Decoder:
    """One way to decode a batch of images with a backend's Runner: greedy, beam search (diverse with
    groups > 1) or sampling, returning `n` captions per image (image b's in rows b*n .. b*n+n-1)."""

    method: str = "greedy"
    beam: int = 1
    alpha: float = 0.0
    groups: int = 1
    diversity: float = 0.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    block_trigrams: bool = False
    n: int = 1
    seed: int = 0

    @classmethod
    def of(cls, settings, n: int | None = None) -> Decoder:
        """The decoding a RunSettings asks for (benchmarks.settings), with `n` captions per image
        (default: its captions_per_image)."""
        s = settings
        return cls(s.decoding, s.beam_size if s.decoding == "beam" else 1, s.length_alpha, s.groups, s.diversity,
                   s.temperature, s.top_k, s.top_p, s.block_trigrams,
                   1 if s.decoding == "greedy" else s.captions_per_image if n is None else n, s.seed)

    def rows_per_image(self) -> int:
        """How many copies of each image's features the search holds (for sizing batches by memory)."""
        return self.beam if self.method == "beam" else self.n

    def __call__(self, runner, global_feats, spatial_feats, max_len: int, offset: int = 0) -> np.ndarray:
        """[B * n, <= max_len-1] token ids. Sampling draws from a generator seeded with (seed, offset),
        offset being the batch's first image within its split: each batch draws its own numbers, and
        a sampled caption depends on the seed and on the batch it was drawn in."""
        if self.method == "sample":
            return runner.sample(global_feats, spatial_feats, max_len, [self.seed, offset], self.n, self.temperature,
                                 self.top_k, self.top_p, self.block_trigrams)[0]
        if self.method == "beam" or self.block_trigrams:
            return runner.beam(global_feats, spatial_feats, max_len, self.beam, self.alpha, self.block_trigrams,
                               self.groups, self.diversity, self.n)
        return runner.greedy(global_feats, spatial_feats, max_len)

    def __str__(self) -> str:
        extra = ", trigram blocking" if self.block_trigrams else ""
        if self.method == "sample":
            return (f"sample {self.n} (temperature {self.temperature:g}, top-k {self.top_k or 'all'}, "
                    f"top-p {self.top_p:g}, seed {self.seed}{extra})")
        if self.method == "beam":
            groups = f", {self.groups} groups, diversity {self.diversity:g}" if self.groups > 1 else ""
            return f"beam {self.beam} (length alpha {self.alpha:g}{groups}{extra})"
        return "greedy" + extra


GREEDY = Decoder()


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
    return filter_log_probs(log_softmax(np.asarray(logits, np.float64) / temperature), top_k, top_p, blocked)


def filter_log_probs(logp: np.ndarray, top_k: int = 0, top_p: float = 1.0,
                     blocked: np.ndarray | None = None) -> np.ndarray:
    """filter_logits after the temperature: `logp` [rows, V] float64 log-probabilities."""
    if blocked is not None:
        keep_all = blocked.all(1, keepdims=True)  # every word would repeat a trigram: block none
        logp = log_softmax(np.where(blocked & ~keep_all, -np.inf, logp))
    if top_k and top_k < logp.shape[1]:
        kth = -np.partition(-logp, top_k - 1, axis=1)[:, top_k - 1:top_k]
        logp = np.where(logp >= kth, logp, -np.inf)
    if top_p < 1.0:
        logp = np.where(_nucleus(logp, top_p), logp, -np.inf)
    return log_softmax(logp) if blocked is not None or top_k or top_p < 1.0 else logp


def _nucleus(logp: np.ndarray, top_p: float) -> np.ndarray:
    """[rows, V] bool: the nucleus, the likeliest words while the probability of those before them
    stays below top_p; among words of equal probability the lower id comes first (a stable sort's
    order). Sorting values, not indices, is 8x faster than argsort at a vocabulary of 176; the words
    kept are the same."""
    desc = np.sort(logp, axis=1)[:, ::-1]
    probs = np.exp(desc)
    size = ((np.cumsum(probs, 1) - probs) < top_p).sum(1)  # a prefix: the sums before only grow
    last = desc[np.arange(len(desc)), size - 1][:, None]  # the least likely word kept
    above, ties = logp > last, logp == last
    room = size[:, None] - above.sum(1, keepdims=True)  # how many of the words tied with it fit
    return above | (ties & (np.cumsum(ties, 1) <= room))


def sample_search(step: Callable, state, batch: int, max_len: int, start_id: int, end_id: int, pad_id: int,
                  rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  block_trigrams: bool = False, reorder: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """step(state, tokens[B]) -> (logits [B, V] numpy, state), B = the rows still sampling (an image n
    times for n captions each); reorder(state, rows) -> state, to drop finished rows from the batch (as a
    one-image loop would stop). Returns ([batch, steps] token ids, pads after <end>; [batch] the model's
    own log-probability of each caption, before temperature and filtering)."""
    tokens = np.full(batch, start_id, np.int64)
    done = np.zeros(batch, bool)
    logprob = np.zeros(batch)
    out: list[np.ndarray] = []
    live = np.arange(batch)  # the rows `state` holds, in this order
    for _ in range(max_len - 1):
        logits, state = step(state, tokens[live])
        logits = np.asarray(logits, np.float64)
        draws = rng.random(batch)  # one number per row, finished or not: the draws never depend on pruning
        blocked = repeated_trigrams(np.stack(out, 1)[live], logits.shape[1]) if block_trigrams and out else None
        own = log_softmax(logits)
        logp = filter_log_probs(own if temperature == 1.0 else log_softmax(logits / temperature), top_k, top_p,
                                blocked)
        # inverse-CDF draw, one number in (0, 1] per row: the first word whose cumulative probability
        # reaches it, never a word of probability 0
        cdf = np.cumsum(np.exp(logp), 1)
        drawn = np.minimum((cdf < (1.0 - draws[live])[:, None] * cdf[:, -1:]).sum(1), logp.shape[1] - 1)
        finished = done[live]
        drawn = np.where(finished, pad_id, drawn).astype(np.int64)
        logprob[live] += np.where(finished, 0.0, own[np.arange(len(live)), drawn])
        column = np.full(batch, pad_id, np.int64)
        column[live] = drawn
        out.append(column)
        done[live] |= drawn == end_id
        tokens = column
        if done.all():
            break
        if reorder is not None and done[live].any():
            keep = np.flatnonzero(~done[live])
            state, live = reorder(state, keep), live[keep]
    return np.stack(out, 1), logprob


def beam_search(step: Callable, state, reorder: Callable, batch: int, beam: int, max_len: int,
                start_id: int, end_id: int, pad_id: int = 0, alpha: float = 0.0,
                block_trigrams: bool = False, groups: int = 1, diversity: float = 0.0,
                top: int = 1, regroup: Callable | None = None) -> np.ndarray:
    """step(state, tokens[B*beam]) -> (logits [B*beam, V] numpy, state); reorder(state, rows) -> state.

    `state` must already hold every image `beam` times (rows b*beam .. b*beam+beam-1).
    regroup(state, rows) -> state, when given, is reorder for rows that each stay among their image's
    (the hypotheses' new order every step), so that what is the same for all of them need not move.
    Returns [batch * top, steps] token ids: each image's `top` best hypotheses, best first.

    Diverse beam search (Vijayakumar et al. 2018): the beam splits into `groups` of beam/groups
    hypotheses; at each step the groups choose in turn, each word's log-probability lowered by
    `diversity` times the number of earlier groups that chose it for the same image at this step
    (Hamming diversity). The penalty steers the choice only; a hypothesis keeps the model's own
    log-probability as its score. One `step` call per time step still advances every group.
    """
    if beam % groups:
        raise ValueError(f"beam {beam} does not split into {groups} groups")
    width = beam // groups
    scores = np.full((batch, beam), -np.inf)
    scores[:, ::width] = 0.0  # a group's hypotheses start identical: keep one, or its top-k fills with copies
    tokens = np.full(batch * beam, start_id, np.int64)
    seqs = np.zeros((batch * beam, 0), np.int64)
    finished = np.zeros(batch * beam, bool)
    live = np.arange(batch)  # images still searching: `state` holds their rows only, in this order
    for _ in range(max_len - 1):
        n = len(live)
        rows = (live[:, None] * beam + np.arange(beam)).reshape(-1)  # their rows among all B*beam
        logits, state = step(state, tokens[rows])
        logp = _next_word_log_probs(logits, seqs[rows], finished[rows], pad_id, block_trigrams)
        src, new = _choose_words(scores, live, logp, groups, diversity, pad_id)
        state = (regroup or reorder)(state, src)
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
    return _best_hypotheses(seqs, scores, pad_id, alpha, top)


def _next_word_log_probs(logits, seqs: np.ndarray, finished: np.ndarray, pad_id: int,
                         block_trigrams: bool) -> np.ndarray:
    """[rows, V] float64 log-probabilities of each hypothesis' next word: trigram repeats at -inf when
    blocked, and a finished hypothesis can only extend with <pad>, at no cost."""
    logp = log_softmax(np.asarray(logits, np.float64))
    if block_trigrams:
        logp[repeated_trigrams(seqs, logp.shape[1])] = -np.inf
    logp[finished] = -np.inf
    logp[finished, pad_id] = 0.0
    return logp


def _choose_words(scores: np.ndarray, live: np.ndarray, logp: np.ndarray, groups: int, diversity: float,
                  pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of (diverse) beam search for the images `live`, their hypotheses' next-word
    log-probabilities `logp` [len(live) * beam, V]: each group in turn keeps its best extensions,
    ranked with the Hamming diversity penalty; `scores` [B, beam] is updated in place with their
    log-probabilities. Returns (the parent of each new hypothesis as a row of `logp`, its word), both
    [len(live) * beam]."""
    n, beam = len(live), scores.shape[1]
    width = beam // groups
    vocab = logp.shape[1]
    logp = logp.reshape(n, beam, vocab)
    chosen = np.zeros((n, vocab))  # how many earlier groups chose each word at this step
    src, new = np.empty((n, beam), np.int64), np.empty((n, beam), np.int64)
    for g in range(groups):
        slots = slice(g * width, (g + 1) * width)
        cand = (scores[live, slots][:, :, None] + logp[:, slots]).reshape(n, width * vocab)
        ranked = cand - np.tile(diversity * chosen, width) if g and diversity else cand
        top_k = np.argpartition(-ranked, width - 1, axis=1)[:, :width]
        order = np.argsort(-np.take_along_axis(ranked, top_k, 1), axis=1, kind="stable")
        top_k = np.take_along_axis(top_k, order, 1)
        scores[live, slots] = np.take_along_axis(cand, top_k, 1)
        src[:, slots] = np.arange(n)[:, None] * beam + g * width + top_k // vocab  # parents within `state`
        new[:, slots] = top_k % vocab
        words = new[:, slots]
        np.add.at(chosen, (np.repeat(np.arange(n), width), words.reshape(-1)), (words != pad_id).reshape(-1))
    return src.reshape(-1), new.reshape(-1)


def _best_hypotheses(seqs: np.ndarray, scores: np.ndarray, pad_id: int, alpha: float, top: int) -> np.ndarray:
    """[B * top, steps]: each image's `top` best of its beam hypotheses `seqs` [B * beam, steps], best
    first, ranked by `scores` [B, beam] with GNMT length normalisation `alpha`."""
    batch, beam = scores.shape
    lengths = (seqs != pad_id).sum(1).reshape(batch, beam)
    ranked = scores / (((5.0 + lengths) / 6.0) ** alpha) if alpha else scores
    if top == 1:
        return seqs.reshape(batch, beam, -1)[np.arange(batch), ranked.argmax(1)]
    best = np.argsort(-ranked, axis=1, kind="stable")[:, :top]
    return seqs.reshape(batch, beam, -1)[np.arange(batch)[:, None], best].reshape(batch * top, -1)
