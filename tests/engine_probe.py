"""One Keras engine's view of every Keras plugin, for tests/test_engines.py.

    KERAS_BACKEND=jax python tests/engine_probe.py DATASET WEIGHTS_DIR OUT.npz

Keras picks its engine at its first import, so each engine needs its own process: the test runs this
file once per engine (TensorFlow in the test's own process, through `probe`). For every Keras plugin,
at small sizes and dropout 0: load the weights the TensorFlow side wrote (WEIGHTS_DIR/<plugin>.npz, in
model order; written when missing), then record the teacher-forced logits of one batch and the
training losses of five Adam steps on the harness's batches, through the harness's own compile and
train_on_batch (backends/keras/train.py). With a scratch folder (the fourth argument), also every
check tests/test_every_plugin.py makes through the runner but training (done above): greedy and
beam decoding, attention maps, weights saved and loaded back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from plugins.registry import available_names, framework_of, get_plugin

STEPS = 5
DECODE_LEN = 8  # captions of up to 7 words in the contract checks: enough to exercise every decoding path
# every Keras plugin, at its family's small test sizes, and dropout off: the comparison is about
# arithmetic, and every engine traces each model
SMALL = {n: get_plugin(n).test_sizes for n in available_names() if framework_of(n) == "keras"}


def probe(dataset: Path, weights_dir: Path) -> dict[str, np.ndarray]:
    """{"<plugin>.logits": [B, T, V] of the first batch, "<plugin>.losses": [STEPS]} on this process's engine."""
    import keras

    from backends.common import OptimConfig
    from backends.keras import train
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import iterate_batches
    from shared_data.dataset import load_dataset

    ds = load_dataset(str(dataset))
    feats = ds.features(ds.default_extractor)
    spec = ModelSpec.of(ds, feats)
    batches = list(iterate_batches(ds, "train", feats, batch_size=16, seed=0, epoch=0, pad_to_max=True))[:STEPS]
    out = {}
    for name, hp in SMALL.items():
        keras.utils.set_random_seed(0)
        model = get_plugin(name).build(spec, dropout=0.0, **hp)
        path = weights_dir / f"{name}.npz"
        if not path.exists():
            np.savez(path, *[keras.ops.convert_to_numpy(w) for w in model.weights])
        with np.load(path) as f:
            model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
        out[f"{name}.logits"] = keras.ops.convert_to_numpy(model(train.inputs(batches[0]), training=False))
        train.compile_model(model, OptimConfig(lr=3e-3, eps=1e-12))
        out[f"{name}.losses"] = np.array([train.train_step(model, b) for b in batches])
        out[f"{name}.jit_compile"] = np.array(model.jit_compile)
    return out


def check_runner(dataset: Path, scratch: Path) -> None:
    from plugins.registry import ModelSpec
    from shared_data.dataset import load_dataset
    from tests.test_every_plugin import check_plugin

    ds = load_dataset(str(dataset))
    feats = ds.features("grid")
    for name in SMALL:
        (scratch / name).mkdir()
        check_plugin(ds, feats, ModelSpec.of(ds, feats), name, scratch / name, max_len=DECODE_LEN,
                     other_engine=True)


if __name__ == "__main__":
    dataset, weights_dir, out = map(Path, sys.argv[1:4])
    np.savez(out, **probe(dataset, weights_dir))
    if len(sys.argv) > 4:
        check_runner(dataset, Path(sys.argv[4]))
