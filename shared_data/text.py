"""Tokenisation and vocabulary: one rule for every caption source.

Captions from the synthetic generator, Flickr8k's captions.txt and Karpathy's JSON all pass through
`tokenize`, so that a vocabulary or a BLEU score never depends on where the text came from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0..3; <pad> must be 0 for Keras' mask_zero and padding_idx=0

_NON_WORD = re.compile(r"[^a-z0-9]+")


def tokenize(caption: str) -> list[str]:
    """Lowercase, split on anything that is not a letter or digit.

    Unlike the Kaggle Keras recipe we keep one-letter words: dropping "a" changes BLEU for
    reasons that have nothing to do with the model.
    """
    return [t for t in _NON_WORD.split(caption.lower()) if t]


# "capbench": `tokenize` above, for the generated datasets (their captions have no punctuation to
# argue about). "ptb": the Stanford PTB tokenizer as the COCO caption evaluation runs it, for
# imported real datasets, so that their scores compare with the literature's ("man's" -> "man 's",
# "t-shirt" stays one word, where `tokenize` gives "man s" and "t shirt").
TOKENIZERS = ("capbench", "ptb")


def ptb_tokenize(captions: list[str]) -> list[list[str]]:
    """pycocoevalcap's PTBTokenizer (Java; lowercased, punctuation dropped) over many captions at once."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from shared_data.errors import UserError

    try:
        out = PTBTokenizer().tokenize({str(i): [{"caption": c}] for i, c in enumerate(captions)})
    except FileNotFoundError:
        raise UserError("the PTB tokenizer of imported datasets needs Java (pycocoevalcap runs Stanford's "
                        "tokenizer): install a Java runtime (17 works) and run prepare again") from None
    if len(out) != len(captions):
        raise UserError(f"the PTB tokenizer returned {len(out)} captions for {len(captions)}; check that Java runs "
                        "(java -version) and run prepare again")
    return [out[str(i)][0].split() for i in range(len(captions))]


def tokenize_all(captions: list[str], tokenizer: str) -> list[list[str]]:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; one of {TOKENIZERS}")
    return ptb_tokenize(captions) if tokenizer == "ptb" else [tokenize(c) for c in captions]


class Vocab:
    """Word <-> id mapping with the four special tokens first."""

    def __init__(self, words: Iterable[str], min_freq: int = 1):
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.min_freq = min_freq

    @classmethod
    def build(cls, tokenised_captions: Iterable[list[str]], min_freq: int = 1) -> Vocab:
        """Words seen at least `min_freq` times, most frequent first, ties alphabetical (deterministic)."""
        counts = Counter(t for caption in tokenised_captions for t in caption)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls(words, min_freq)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def encode(self, tokens: list[str]) -> list[int]:
        """<start> tokens <end>, unknown words mapped to <unk>."""
        return [self.start_id] + [self.stoi.get(t, self.unk_id) for t in tokens] + [self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids to words, stopping at <end> and dropping <pad>/<start>: what metrics see."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i])
        return words

    def to_json(self) -> dict:
        return {"itos": self.itos, "min_freq": self.min_freq}

    @classmethod
    def from_json(cls, data: object) -> Vocab:
        """The inverse of to_json; anything else is a ValueError saying what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
            raise ValueError('expected an object {"itos": [words], "min_freq": N}')
        itos = data["itos"]
        if not all(isinstance(w, str) for w in itos):
            raise ValueError("'itos' holds something that is not a word")
        if tuple(itos[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, found {itos[:4]}")
        if len(set(itos)) != len(itos):
            raise ValueError("a word appears twice in 'itos'")
        min_freq = data.get("min_freq", 1)
        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
            raise ValueError(f"'min_freq' is {min_freq!r}, expected a positive integer")
        return cls(itos[4:], min_freq)
