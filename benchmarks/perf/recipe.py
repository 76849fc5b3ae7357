"""The Kaggle notebook's own training of seed 000's model, timed: `python -m benchmarks.recipe [--steps N]`.

Seed 000's TensorFlow side (the Flickr8k Kaggle notebook) trains its merge model the recipe's way, and
this module repeats it on a prepared dataset as the notebook writes it, so that "N times the recipe" is
measured against the recipe itself rather than against the harness's imitation of it (perf's prefix mode):

- the model is Keras' functional API: image vector -> Dropout(0.4) -> Dense(256, relu); caption prefix ->
  Embedding(V, 256, mask_zero=True) -> Dropout(0.4) -> LSTM(256) (last state only); add -> Dense(256,
  relu) -> Dense(V, softmax); `compile(loss="categorical_crossentropy", optimizer="adam")`. The same
  layers and parameter count as keras_merge (tests/test_recipe.py);
- a Python generator yields, per batch of images, one sample per caption prefix: the image vector, the
  prefix pre-padded to max_length (`pad_sequences`), the next word one-hot (`to_categorical`);
- `model.fit(generator, steps_per_epoch=...)` consumes it.

The batch holds as many images as perf's prefix mode puts in a batch of `--batch-size` captions (the
notebook's own is 32 images), so both see the same samples a step. Tokens are the samples: each predicts
one target token. Throughput is the steady state: a first `fit` of `--warmup` steps traces the graph,
a second one of `--steps` is timed whole (fit's own per-step cost, the generator and the one-hot
targets included, as in the notebook). Keras runs on TensorFlow (the notebook's engine) unless
KERAS_BACKEND says otherwise."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

UNITS, DROPOUT = 256, 0.4  # the notebook's sizes


def build(vocab_size: int, image_dim: int, max_length: int):
    import keras
    from keras import layers

    image = keras.Input((image_dim,), name="image")
    fe = layers.Dense(UNITS, activation="relu")(layers.Dropout(DROPOUT)(image))
    prefix = keras.Input((max_length,), name="prefix")
    se = layers.Embedding(vocab_size, UNITS, mask_zero=True)(prefix)
    se = layers.LSTM(UNITS)(layers.Dropout(DROPOUT)(se))
    out = layers.Dense(vocab_size, activation="softmax")(layers.Dense(UNITS, activation="relu")(layers.add([fe, se])))
    model = keras.Model([image, prefix], out)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def generator(table, global_feats: np.ndarray, vocab_size: int, max_length: int, images_per_batch: int, seed: int):
    """The notebook's data_generator over the train captions: forever, image batches in a seeded order."""
    from keras.utils import pad_sequences, to_categorical

    starts = np.cumsum(table.per_image) - table.per_image
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(table.per_image))
        for first in range(0, len(order), images_per_batch):
            x1, x2, y = [], [], []
            for i in order[first:first + images_per_batch]:
                for c in range(starts[i], starts[i] + table.per_image[i]):
                    seq = table.tokens[c, :table.lengths[c]]
                    for t in range(1, len(seq)):
                        x1.append(global_feats[table.rows[c]])
                        x2.append(pad_sequences([seq[:t]], maxlen=max_length)[0])
                        y.append(to_categorical([seq[t]], num_classes=vocab_size)[0])
            yield (np.array(x1), np.array(x2)), np.array(y)
        epoch += 1


def measure(ds, extractor: str, batch_size: int, steps: int, warmup: int, seed: int = 0) -> dict:
    import keras

    from shared_data.batches import CaptionTable

    keras.utils.set_random_seed(seed)
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    feats = ds.features(extractor, spatial=False, global_=True)
    global_feats = np.asarray(feats.global_[:])  # the notebook keeps every image's vector in a dict in memory
    images_per_batch = table.images_per_batch(batch_size)  # as perf's prefix mode
    model = build(len(ds.vocab), global_feats.shape[1], ds.max_length)
    batches = generator(table, global_feats, len(ds.vocab), ds.max_length, images_per_batch, seed)
    t0 = time.perf_counter()
    model.fit(batches, steps_per_epoch=max(warmup, 1), epochs=1, verbose=0, shuffle=False)  # the generator orders
    first_s = time.perf_counter() - t0
    sizes: list[int] = []

    def counted():  # each batch's samples, as fit takes them (it may read ahead of the step it runs)
        for b in batches:
            sizes.append(len(b[1]))
            yield b

    t0 = time.perf_counter()
    model.fit(counted(), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": sum(sizes[:steps]) / seconds, "steps": steps, "seconds": seconds,
            "warmup_s": first_s, "images_per_batch": images_per_batch, "parameters": model.count_params(),
            "engine": keras.backend.backend(), "keras": keras.__version__}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.settings import RunSettings
    from shared_data.dataset import DEFAULT_DATASET, load_dataset
    from shared_data.errors import UserError

    p = argparse.ArgumentParser(prog="python -m benchmarks.recipe", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--extractor", default=None, help="default: the dataset's own")
    default = RunSettings().batch_size
    p.add_argument("--batch-size", type=int, default=default, help=f"captions a batch, as in run (default {default})")
    p.add_argument("--steps", type=int, default=200, help="timed steps (default 200)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps first, the trace among them (at least one runs; default 5)")
    args = p.parse_args(argv)
    try:
        if min(args.batch_size, args.steps) < 1 or args.warmup < 0:
            raise UserError("--batch-size and --steps must be at least 1, --warmup at least 0")
        ds = load_dataset(args.dataset, args.data_dir, verify=False)
        extractor = args.extractor or ds.default_extractor
        ds.features(extractor)  # an unknown extractor: one line now
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(measure(ds, extractor, args.batch_size, args.steps, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
