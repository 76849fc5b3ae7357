"""The stress dataset: random features of any shape and Zipf-distributed captions, no images.

`python -m benchmarks prepare random --images N --global-dim D --grid HxWxC --vocab V` makes a
dataset that passes every check the loader makes, at the shapes of the datasets the seeds use
(Flickr8k: 8,091 images, 14x14x2048 ResNet-101 grids, 8,485 words; COCO: 123,287 images), at the
speed of the disk rather than of an extractor. Its scores mean nothing (the captions are unrelated
to the features): it is for memory, throughput and scale, not for quality.

Captions: five per image, lengths drawn from a negative binomial with Flickr8k's mean caption length
(10.8 words) and a spread like its own (most 5-20 words), words drawn by a Zipf law (rank r has
probability proportional to 1/r), as in natural text; the vocabulary `prepare` builds from train
is then close to V.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from shared_data.errors import UserError
from shared_data.sources import Source, SourceImage

CAPTIONS_PER_IMAGE = 5
MEAN_WORDS = 10.8  # Flickr8k's mean caption length in words
LENGTH_SHAPE = 8  # negative binomial n: sd about 4.9 words around the mean
MAX_WORDS = 40
EVAL_FRACTION = 8  # val and test get 1/8 of the images each (Flickr8k: 1,000 of 8,091) ...
EVAL_MAX = 5000  # ... at most 5,000 each (Karpathy's COCO split)
BLOCK_BYTES = 256 << 20  # features are generated and written about this much at a time
EXTRACTOR = "random"  # the features' name in the manifest

DEFAULTS = {"images": 8091, "global_dim": 2048, "grid": "14x14x2048", "vocab": 8485}  # Flickr8k, ResNet-101


def parse_grid(text: str) -> tuple[int, int] | None:
    """'HxWxC' -> (H*W, C) positions and channels; 'none' -> None (global features only)."""
    if text.strip().lower() == "none":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not m or min(int(g) for g in m.groups()) < 1:
        raise UserError(f"--grid {text!r} is not HxWxC with positive whole numbers (14x14x2048), or none")
    h, w, c = (int(g) for g in m.groups())
    return h * w, c


def split_sizes(n: int) -> dict[str, int]:
    evaluation = min(max(1, n // EVAL_FRACTION), EVAL_MAX)
    return {"train": n - 2 * evaluation, "val": evaluation, "test": evaluation}


def build_source(n: int, vocab: int, seed: int) -> Source:
    """n images with five random captions each, over a Zipf vocabulary of `vocab` words."""
    sizes = split_sizes(n)
    if sizes["train"] < 1:
        raise UserError(f"--images {n} is too few: the random dataset needs at least 3 (train, val, test)")
    rng = np.random.default_rng([seed, 0])
    n_captions = n * CAPTIONS_PER_IMAGE
    p = LENGTH_SHAPE / (LENGTH_SHAPE + MEAN_WORDS)
    lengths = np.clip(rng.negative_binomial(LENGTH_SHAPE, p, n_captions), 1, MAX_WORDS)
    zipf = 1.0 / np.arange(1, vocab + 1)
    words = np.searchsorted(np.cumsum(zipf / zipf.sum()), rng.random(int(lengths.sum())), side="right")
    names = np.array([f"w{r}" for r in range(vocab)])
    # ids whose rounding pushed them past the last word (cumsum < 1 by float error) are the rarest word
    tokens = names[np.minimum(words, vocab - 1)]
    ends = np.cumsum(lengths)
    captions = [" ".join(tokens[e - k:e]) for e, k in zip(ends.tolist(), lengths.tolist(), strict=True)]
    split_of = ["train"] * sizes["train"] + ["val"] * sizes["val"] + ["test"] * sizes["test"]
    images = [SourceImage(f"{i:06d}.random", split_of[i], captions[i * CAPTIONS_PER_IMAGE:(i + 1) * CAPTIONS_PER_IMAGE],
                          Path(f"{i:06d}.random")) for i in range(n)]
    return Source("random", images, info={"images": n, "vocab_words": vocab, "seed": seed,
                                          "split_rule": f"val and test: 1/{EVAL_FRACTION} of the images each, "
                                                        f"at most {EVAL_MAX}"})


def feature_rows(global_dim: int, spatial: tuple[int, int] | None, seed: int):
    """rows_of(ids) for shared_data.features.write_rows: uniform [0, 1) features (non-negative, like
    a ReLU network's), drawn per image from its own seed, so a resumed write gives the same rows."""

    def rows_of(ids: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        first = int(ids[0].split(".")[0])
        rng = np.random.default_rng([seed, 1, first])
        g = rng.random((len(ids), global_dim), dtype=np.float32)
        s = None if spatial is None else rng.random((len(ids), *spatial), dtype=np.float32)
        return g, s

    return rows_of


def rows_per_block(global_dim: int, spatial: tuple[int, int] | None) -> int:
    row = global_dim + (0 if spatial is None else spatial[0] * spatial[1])
    return max(1, BLOCK_BYTES // (4 * row))
