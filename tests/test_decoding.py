"""Batched beam search: exact on a toy model, equal to greedy at beam 1, the same in both frameworks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backends.decoding import beam_search, filter_logits, log_softmax, sample_search

START, END, PAD = 1, 2, 0


def toy(seed: int, vocab: int = 5):
    """A bigram 'model': logits depend on the previous token and the image; state = image row ids."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 2, size=(3, vocab, vocab))  # image, previous token -> logits
    table[:, :, START] = -1e9  # never generate <start> or <pad>
    table[:, :, PAD] = -1e9

    def step(state, tokens):
        return table[state, tokens], state

    def reorder(state, rows):
        return state[rows]

    return table, step, reorder


def brute_force(table, image: int, max_len: int, vocab: int) -> tuple[float, list[int]]:
    """Best log-probability sequence over every sequence of up to max_len-1 tokens (ending at <end>)."""
    best = (-np.inf, [])
    for n in range(1, max_len):
        for seq in itertools.product(range(vocab), repeat=n):
            if END in seq[:-1]:
                continue
            prev, total = START, 0.0
            for tok in seq:
                total += log_softmax(table[image, prev])[tok]
                prev = tok
            if seq[-1] != END and n < max_len - 1:
                continue  # unfinished sequences only count when they hit the length limit
            best = max(best, (total, list(seq)))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_finds_the_best_sequence(seed):
    table, step, reorder = toy(seed)
    max_len, vocab = 5, 5
    images = np.array([0, 1, 2])
    beam = 40  # wide enough to be exhaustive at this size
    out = beam_search(step, np.repeat(images, beam), reorder, 3, beam, max_len, START, END, PAD)
    for b, image in enumerate(images):
        _, expected = brute_force(table, image, max_len, vocab)
        got = [t for t in out[b] if t != PAD]
        assert got == expected


def test_beam_one_is_greedy():
    table, step, reorder = toy(7)
    out = beam_search(step, np.arange(3), reorder, 3, 1, 6, START, END, PAD)
    for image in range(3):
        prev, greedy = START, []
        for _ in range(5):
            prev = int(table[image, prev].argmax())
            greedy.append(prev)
            if prev == END:
                break
        assert [t for t in out[image] if t != PAD] == greedy


def test_finished_hypotheses_stop_growing():
    table, step, reorder = toy(3)
    out = beam_search(step, np.repeat(np.arange(3), 3), reorder, 3, 3, 8, START, END, PAD)
    for row in out:
        if END in row:
            assert (row[list(row).index(END) + 1:] == PAD).all()


@pytest.fixture(scope="module")
def twins(small_dataset):
    """torch_merge after 20 training steps (so that its distributions are not flat) and keras_merge with
    the same weights, the dataset and 12 test images' features."""
    pytest.importorskip("torch")
    from test_parity_merge import copy_torch_to_keras

    from backends.common import OptimConfig
    from backends.keras.runner import Runner as KRunner
    from backends.torch.runner import Runner as TRunner
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import iterate_batches
    from shared_data.dataset import load_dataset

    ds = load_dataset(str(small_dataset))
    f = ds.features("grid")
    spec = ModelSpec(len(ds.vocab), f.global_.shape[1], None, ds.max_length)
    t = TRunner(get_plugin("torch_merge"), spec, {**get_plugin("torch_merge").defaults}, 0, OptimConfig())
    k = KRunner(get_plugin("keras_merge"), spec, {**get_plugin("keras_merge").defaults}, 0, OptimConfig())
    for b in list(iterate_batches(ds, "train", f, 64, 0, 0))[:20]:
        t.train_step(b)
    copy_torch_to_keras(t.model, k.model)
    return t, k, ds, f.global_[ds.splits["test"].feature_rows[:12]]


def test_torch_and_keras_beams_agree(twins):
    """The same weights in both frameworks give the same beam-search captions."""
    import torch

    t, k, ds, g = twins
    bt = t.beam(g, None, ds.max_length, beam=3, alpha=0.6)
    bk = k.beam(g, None, ds.max_length, beam=3, alpha=0.6)
    np.testing.assert_array_equal(bt, bk)
    assert torch.equal(torch.from_numpy(t.beam(g, None, ds.max_length, beam=1)[:, :5]),
                       torch.from_numpy(t.greedy(g, None, ds.max_length)[:, :5]))


# ------------------------------------------------------------------- sampling and trigram blocking
def test_top_k_one_and_a_cold_temperature_are_greedy():
    table, step, _ = toy(11)
    greedy = beam_search(step, np.arange(3), lambda s, r: s[r], 3, 1, 6, START, END, PAD)
    for kwargs in ({"top_k": 1}, {"temperature": 1e-4}, {"top_p": 1e-9}):
        out, logprob = sample_search(step, np.arange(3), 3, 6, START, END, PAD, np.random.default_rng(0), **kwargs)
        np.testing.assert_array_equal(out[:, :greedy.shape[1]], greedy)
        assert (logprob <= 0).all()


def test_samples_follow_the_models_distribution():
    """First words of 20,000 captions of one image against the model's first-step probabilities."""
    table, step, _ = toy(5)
    rows = np.zeros(20_000, np.int64)
    out, logprob = sample_search(step, rows, len(rows), 2, START, END, PAD, np.random.default_rng(1))
    freq = np.bincount(out[:, 0], minlength=5) / len(rows)
    np.testing.assert_allclose(freq, np.exp(log_softmax(table[0, START])), atol=0.015)
    np.testing.assert_allclose(logprob, log_softmax(table[0, START])[out[:, 0]])
    again, _ = sample_search(step, rows, len(rows), 2, START, END, PAD, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)  # a seed fixes the captions


def test_filters_keep_the_likeliest_words():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(np.exp(filter_logits(logits, top_k=2)), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(np.exp(filter_logits(logits, top_p=0.7)), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(np.exp(filter_logits(logits, top_p=0.85)), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    np.testing.assert_allclose(np.exp(filter_logits(logits, temperature=2.0)).sum(), 1.0)


def test_the_nucleus_is_the_one_a_stable_sort_of_the_words_gives():
    """top-p sorts probabilities, not word ids; checked against the textbook argsort, ties included
    (logits rounded to a few values, so many words share one probability)."""
    rng = np.random.default_rng(0)
    for p in (0.05, 0.3, 0.9, 0.99):
        logp = log_softmax(np.round(rng.normal(size=(300, 12)) * 2) / 2)
        order = np.argsort(-logp, axis=1, kind="stable")
        probs = np.exp(np.take_along_axis(logp, order, 1))
        kept = np.zeros_like(logp, bool)
        np.put_along_axis(kept, order, np.cumsum(probs, 1) - probs < p, 1)
        np.testing.assert_array_equal(np.isfinite(filter_logits(logp, top_p=p)), kept)


def test_trigram_blocking_stops_a_loop():
    """A model that always continues 3 -> 4 -> 3 repeats 'x y x y ...'; blocked, no trigram comes twice."""
    vocab = 6
    table = np.full((1, vocab, vocab), -1e9)
    table[0, START, 3] = 0
    table[0, 3, 4], table[0, 3, 5] = 0, -3
    table[0, 4, 3], table[0, 4, END] = 0, -5
    table[0, 5, END] = 0

    def step(state, tokens):
        return table[state, tokens], state

    loop = beam_search(step, np.zeros(2, np.int64), lambda s, r: s[r], 1, 2, 9, START, END, PAD)[0]
    assert list(loop[:4]) == [3, 4, 3, 4]
    for blocked in (beam_search(step, np.zeros(2, np.int64), lambda s, r: s[r], 1, 2, 9, START, END, PAD,
                                block_trigrams=True)[0],
                    sample_search(step, np.zeros(1, np.int64), 1, 9, START, END, PAD, np.random.default_rng(0),
                                  top_k=1, block_trigrams=True)[0][0]):
        words = [int(t) for t in blocked if t != PAD]
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        assert len(trigrams) == len(set(trigrams)), words


def test_torch_and_keras_sample_the_same_captions(twins):
    """The same weights in both frameworks and the same seed: the same sampled captions."""
    t, k, ds, g = twins
    kwargs = {"seed": 3, "n": 4, "temperature": 0.8, "top_p": 0.9, "block_trigrams": True}
    (st, lt), (sk, lk) = t.sample(g, None, ds.max_length, **kwargs), k.sample(g, None, ds.max_length, **kwargs)
    np.testing.assert_array_equal(st, sk)
    np.testing.assert_allclose(lt, lk, atol=1e-4)
    assert st.shape[0] == 48 and len({tuple(r) for r in st}) > 12  # four different captions for most images


# ------------------------------------------------------------------- diverse beam search
def _words(row) -> list[int]:
    return [int(t) for t in row if t != PAD]


def test_one_group_is_plain_beam_search_and_top_ranks_hypotheses():
    table, step, reorder = toy(5, vocab=6)
    state = np.repeat(np.arange(3), 4)
    plain = beam_search(step, state, reorder, 3, 4, 7, START, END, PAD, alpha=0.6)
    grouped = beam_search(step, state, reorder, 3, 4, 7, START, END, PAD, alpha=0.6, groups=1, diversity=5.0)
    np.testing.assert_array_equal(plain, grouped)
    top = beam_search(step, state, reorder, 3, 4, 7, START, END, PAD, alpha=0.6, top=2)
    assert top.shape[0] == 6
    np.testing.assert_array_equal(top[::2, :plain.shape[1]], plain)  # each image's first row is its best


def test_groups_without_a_penalty_repeat_each_other():
    """With diversity 0 every group is the same narrow beam: groups of width 1 are each greedy."""
    table, step, reorder = toy(7, vocab=6)
    greedy = beam_search(step, np.arange(3), reorder, 3, 1, 7, START, END, PAD)
    out = beam_search(step, np.repeat(np.arange(3), 3), reorder, 3, 3, 7, START, END, PAD, groups=3, top=3)
    for b in range(3):
        for r in range(3):
            assert _words(out[b * 3 + r]) == _words(greedy[b])


def test_a_strong_penalty_makes_groups_start_differently():
    """Hamming diversity: at step one, each group pays `diversity` per earlier group that chose a word,
    so with a large penalty the groups' first words are all different."""
    table, step, reorder = toy(9, vocab=6)
    out = beam_search(step, np.repeat(np.arange(3), 3), reorder, 3, 3, 7, START, END, PAD, groups=3,
                      diversity=100.0, top=3)
    for b in range(3):
        firsts = {int(out[b * 3 + r, 0]) for r in range(3)}
        assert len(firsts) == 3, out[b * 3:b * 3 + 3]
    with pytest.raises(ValueError, match="groups"):
        beam_search(step, np.repeat(np.arange(3), 4), reorder, 3, 4, 7, START, END, PAD, groups=3)


def test_torch_and_keras_diverse_beams_agree(twins):
    t, k, ds, g = twins
    kwargs = {"beam": 6, "alpha": 0.6, "groups": 3, "diversity": 0.5, "top": 3}
    bt, bk = t.beam(g, None, ds.max_length, **kwargs), k.beam(g, None, ds.max_length, **kwargs)
    np.testing.assert_array_equal(bt, bk)
    assert bt.shape[0] == 36
