"""The seeded batch iterator: the one source of training batches for every framework.

For a given (split, batch size in captions, seed, epoch) it yields the same numpy arrays in the same
order, whichever backend consumes them; frameworks differ only in what they do with a batch.
A caption, not an image, is the unit: each of an image's five captions is its own sample, so
"batch size 64" means 64 captions (as in the PyTorch recipes, and as in the Keras recipe once its
prefix expansion is undone).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from shared_data.dataset import Dataset, Features, Split
from shared_data.text import Vocab


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


@dataclass
class PrefixBatch(Batch):
    """The Keras recipe's expansion: one sample per caption prefix, predicting only the next word.

    `tokens` holds the prefixes themselves (the model's inputs), padded before ("pre", the recipe's
    pad_sequences default, right for models that mask and so skip leading pads) or after ("post",
    for models that do not mask, where leading pads would run through the recurrence). The one
    target of each sample sits at its prefix's last position in `next_tokens`, zeros elsewhere, so
    the same masked token-mean loss applies: a mean over samples, i.e. over the same target tokens
    whole-sequence teacher forcing averages over."""

    next_tokens: np.ndarray = None  # [S, W] int32

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens

    @property
    def targets(self) -> np.ndarray:
        return self.next_tokens

    @property
    def num_tokens(self) -> int:
        return len(self.rows)


def to_width(batch: Batch, width: int) -> Batch:
    """The batch with its token columns cut or padded on the right to `width` (a PrefixBatch's targets
    with them). Only trailing pads go or come: no real position of a causal model sees them, and the loss
    masks them, so the loss and gradients are those of the batch as it was. The backends use it where
    an engine's cost depends on the width: Keras on TensorFlow's graph mode cuts to the longest caption,
    compiled PyTorch time loops pad to max_length (one compiled program instead of one per length)."""
    have = batch.tokens.shape[1]
    if width == have:
        return batch

    def fit(x: np.ndarray) -> np.ndarray:
        return x[:, :width] if width < have else np.concatenate([x, np.zeros((len(x), width - have), x.dtype)], 1)

    more = {"next_tokens": fit(batch.next_tokens)} if isinstance(batch, PrefixBatch) else {}
    return replace(batch, tokens=fit(batch.tokens), **more)


class CaptionTable:
    """A split's captions encoded once: [n_captions, max_length] token ids and the image rows."""

    def __init__(self, split: Split, vocab: Vocab, max_length: int):
        encoded = [vocab.encode(c.split()) for caps in split.texts for c in caps]
        self.per_image = np.array([len(c) for c in split.texts], np.int64)  # an image's captions are contiguous
        self.rows = np.repeat(split.feature_rows, self.per_image).astype(np.int64)
        self.lengths = np.array([len(e) for e in encoded], np.int32)
        if self.lengths.max(initial=0) > max_length:
            raise ValueError(f"caption of {self.lengths.max()} tokens exceeds max_length {max_length}")
        self.tokens = np.zeros((len(encoded), max_length), np.int32)
        for i, e in enumerate(encoded):
            self.tokens[i, : len(e)] = e

    def __len__(self) -> int:
        return len(self.rows)

    def images_per_batch(self, batch_size: int) -> int:
        """Images a prefix batch holds: as many as give `batch_size` captions on average, the same samples a
        step whoever expands them (iterate_prefix_batches, perf's epoch count, benchmarks/perf/recipe.py)."""
        return max(1, round(batch_size * len(self.per_image) / len(self)))


T = TypeVar("T")
PREFETCH = 2  # batches read ahead: one being trained on, one ready, one being read
_END = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int = PREFETCH) -> Iterator[T]:
    """`items`, produced in a background thread up to `depth` ahead, so that reading features from
    disk overlaps training (the frameworks' kernels and h5py's reads leave the GIL to each other).
    Same items in the same order; an error in the producer is raised here, at the item it stopped at.
    Closing the generator early (a step budget) stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                ready.put(item)
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as e:  # noqa: B036 - handed to the consumer, which raises it
            ready.put(_Raised(e))

    thread = threading.Thread(target=produce, name="capbench-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass


def iterate_batches(ds: Dataset, split: str, features: Features, batch_size: int, seed: int, epoch: int,
                    shuffle: bool = True, drop_last: bool = False, pad_to_max: bool = False,
                    table: CaptionTable | None = None, depth: int = PREFETCH) -> Iterator[Batch]:
    """Batches of `batch_size` captions, read `depth` batches ahead in a background thread (0: none).

    The order is a permutation drawn from `default_rng([seed, epoch])`: independent of the
    framework, of global random state and of how many batches an earlier epoch consumed.
    Batches are cut to their longest caption unless `pad_to_max` (fixed shapes, for graph
    compilers that retrace on every new shape); either way padding is masked out of the loss.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batches = _batches(ds, split, features, batch_size, seed, epoch, shuffle, drop_last, pad_to_max, table)
    return prefetch(batches, depth) if depth else batches


def _batches(ds: Dataset, split: str, features: Features, batch_size: int, seed: int, epoch: int,
             shuffle: bool, drop_last: bool, pad_to_max: bool, table: CaptionTable | None) -> Iterator[Batch]:
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


def expand_prefixes(tokens: np.ndarray, lengths: np.ndarray, rows: np.ndarray, features: Features,
                    width: int | None = None, padding: str = "post") -> PrefixBatch:
    """Captions [B, L] (with <start>/<end>) -> one sample per prefix: sum(lengths - 1) samples."""
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    n = lengths.astype(np.int64) - 1  # prefixes per caption = its target tokens
    cap = np.repeat(np.arange(len(lengths)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 1  # prefix length 1..n
    width = width or int(n.max())
    col = np.arange(width)[None, :]
    src = col if padding == "post" else col - (width - k[:, None])  # which caption token lands in each column
    valid = (src >= 0) & (src < k[:, None])
    prefix = np.where(valid, tokens[cap[:, None], np.clip(src, 0, tokens.shape[1] - 1)], 0).astype(np.int32)
    target_col = k - 1 if padding == "post" else np.full_like(k, width - 1)
    next_tokens = np.zeros_like(prefix)
    next_tokens[np.arange(len(k)), target_col] = tokens[cap, k]
    sample_rows = rows[cap]
    return PrefixBatch(rows=sample_rows, tokens=prefix, lengths=(k + 1).astype(np.int32),
                       global_feats=features.global_[sample_rows],
                       spatial_feats=None if features.spatial is None else features.spatial[sample_rows],
                       next_tokens=next_tokens)


def iterate_prefix_batches(ds: Dataset, split: str, features: Features, batch_size: int, seed: int, epoch: int,
                           padding: str = "post", pad_to_max: bool = False,
                           table: CaptionTable | None = None, depth: int = PREFETCH) -> Iterator[PrefixBatch]:
    """`--training prefix`: batches of whole images, each with all its captions' prefixes.

    As in the Keras recipe's data generator, a batch is N images with every (image, prefix, next
    word) sample of their captions. N is the batch size in captions divided by the mean number of
    captions per image (64 captions -> 13 images of 5 captions), so both modes see the same number
    of target tokens per step on average. Image order: a permutation from default_rng([seed, epoch]).
    Read `depth` batches ahead, as iterate_batches."""
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    batches = _prefix_batches(ds, split, features, batch_size, seed, epoch, padding, pad_to_max, table)
    return prefetch(batches, depth) if depth else batches


def _prefix_batches(ds: Dataset, split: str, features: Features, batch_size: int, seed: int, epoch: int,
                    padding: str, pad_to_max: bool, table: CaptionTable | None) -> Iterator[PrefixBatch]:
    table = table or CaptionTable(ds.splits[split], ds.vocab, ds.max_length)
    per_image = table.per_image
    starts = np.cumsum(per_image) - per_image
    n_images = len(per_image)
    images_per_batch = table.images_per_batch(batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(n_images)
    for start in range(0, n_images, images_per_batch):
        imgs = order[start:start + images_per_batch]
        idx = np.concatenate([np.arange(starts[i], starts[i] + per_image[i]) for i in imgs])
        yield expand_prefixes(table.tokens[idx], table.lengths[idx], table.rows[idx], features,
                              width=ds.max_length - 1 if pad_to_max else None, padding=padding)


def num_batches(num_captions: int, batch_size: int, drop_last: bool = False) -> int:
    return num_captions // batch_size if drop_last else -(-num_captions // batch_size)
