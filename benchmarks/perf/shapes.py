"""Flickr8k's shapes without Flickr8k: random batches at the real vocabulary, feature sizes,
caption lengths and batch size, so that perf times what a real dataset would cost."""
from __future__ import annotations

import numpy as np


# -------------------------------------------------------------------------------------- children
def flickr8k_batches(spec, batch_size: int, pad_to_max: bool, seed: int, pool: int = 4) -> list:
    """Random captions at Flickr8k's shapes: lengths uniform in [8, 37] tokens with <start>/<end>."""
    from shared_data.batches import Batch

    out = []
    for i in range(pool):
        rng = np.random.default_rng([seed, i])
        lengths = rng.integers(FLICKR8K["min_length"], spec.max_length + 1, batch_size).astype(np.int32)
        tokens = np.zeros((batch_size, spec.max_length), np.int32)
        for r, n in enumerate(lengths):
            tokens[r, 0], tokens[r, n - 1] = spec.start_id, spec.end_id
            tokens[r, 1:n - 1] = rng.integers(4, spec.vocab_size, n - 2)  # after <pad> <start> <end> <unk>
        width = spec.max_length if pad_to_max else int(lengths.max())
        spatial = None
        if spec.spatial_shape is not None:
            spatial = rng.standard_normal((batch_size, *spec.spatial_shape), np.float32)
        out.append(Batch(rows=np.arange(batch_size), tokens=tokens[:, :width], lengths=lengths,
                         global_feats=rng.standard_normal((batch_size, spec.global_dim), np.float32),
                         spatial_feats=spatial))
    return out


def _cycle(make_epoch):
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


FLICKR8K = dict(vocab_size=8485, global_dim=4096, spatial_shape=(196, 2048), max_length=37, batch_size=128,
                min_length=8, train_captions=30000)  # 6,000 train images x 5 captions
