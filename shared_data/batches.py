"""The seeded batch iterator: the one source of training batches for every framework.

For a given (split, batch size in captions, seed, epoch) it yields the same numpy arrays in the same
order, whichever backend consumes them; frameworks differ only in what they do with a batch.
A caption, not an image, is the unit: each of an image's five captions is its own sample, so
"batch size 64" means 64 captions (as in the PyTorch recipes, and as in the Keras recipe once its
prefix expansion is undone).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .dataset import Dataset, Features, Split
from .text import Vocab


@dataclass
class Batch:
    rows: np.ndarray  # [B] feature row of each caption's image
    tokens: np.ndarray  # [B, L] int32: <start> w1 .. wn <end> <pad>..., pad = 0
    lengths: np.ndarray  # [B] int32: tokens including <start> and <end>
    global_feats: np.ndarray  # [B, D] float32
    spatial_feats: np.ndarray | None  # [B, P, C] float32

    @property
    def inputs(self) -> np.ndarray:
        """Teacher forcing: position t sees tokens up to t and predicts token t+1."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[:, 1:]

    @property
    def mask(self) -> np.ndarray:
        """[B, L-1] float32, 1 where a target token is real (loss is averaged over these)."""
        return (self.targets != 0).astype(np.float32)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum() - len(self.lengths))  # every token after <start> is a target


class CaptionTable:
    """A split's captions encoded once: [n_captions, max_length] token ids and the image rows."""

    def __init__(self, split: Split, vocab: Vocab, max_length: int):
        encoded = [vocab.encode(c) for caps in split.captions for c in caps]
        self.rows = np.repeat(split.feature_rows, [len(c) for c in split.captions]).astype(np.int64)
        self.lengths = np.array([len(e) for e in encoded], np.int32)
        if self.lengths.max(initial=0) > max_length:
            raise ValueError(f"caption of {self.lengths.max()} tokens exceeds max_length {max_length}")
        self.tokens = np.zeros((len(encoded), max_length), np.int32)
        for i, e in enumerate(encoded):
            self.tokens[i, : len(e)] = e

    def __len__(self) -> int:
        return len(self.rows)


def iterate_batches(ds: Dataset, split: str, features: Features, batch_size: int, seed: int, epoch: int,
                    shuffle: bool = True, drop_last: bool = False, pad_to_max: bool = False,
                    table: CaptionTable | None = None) -> Iterator[Batch]:
    """Batches of `batch_size` captions.

    The order is a permutation drawn from `default_rng([seed, epoch])`: independent of the
    framework, of global random state and of how many batches an earlier epoch consumed.
    Batches are cut to their longest caption unless `pad_to_max` (fixed shapes, for graph
    compilers that retrace on every new shape); either way padding is masked out of the loss.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    table = table or CaptionTable(ds.splits[split], ds.vocab, ds.max_length)
    order = np.random.default_rng([seed, epoch]).permutation(len(table)) if shuffle else np.arange(len(table))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        lengths = table.lengths[idx]
        width = ds.max_length if pad_to_max else int(lengths.max())
        rows = table.rows[idx]
        yield Batch(rows=rows, tokens=table.tokens[idx, :width], lengths=lengths,
                    global_feats=features.global_[rows],
                    spatial_feats=None if features.spatial is None else features.spatial[rows])


def num_batches(num_captions: int, batch_size: int, drop_last: bool = False) -> int:
    return num_captions // batch_size if drop_last else -(-num_captions // batch_size)
