"""The Keras backend behind benchmarks/worker.py. The Keras backend (tensorflow, jax, torch) is
chosen by KERAS_BACKEND, which the worker sets before the first import of keras."""

from __future__ import annotations

import os

import keras
import numpy as np

from backends.common import EAGER_FP32, Execution, OptimConfig
from backends.keras import train as T
from shared_data.batches import Batch

FRAMEWORK = "keras"
# graph compilers retrace for every new input shape: feed fixed-length (max_length) batches, which
# hold the same tokens as everyone else's and whose extra pads the loss masks out
FIXED_SHAPES = True


def _gpu() -> bool:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def set_threads(n: int) -> None:
    """CPU threads of one run, when several runs share the machine (`--jobs N`); before any op runs."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(n)


class Runner:
    def __init__(self, plugin, spec, hparams: dict, seed: int, optim: OptimConfig,
                 execution: Execution = EAGER_FP32):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)  # share the card, measure honestly
        keras.utils.set_random_seed(seed)
        # layers take the dtype policy in force when they are built; restored after, for the next Runner
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if execution.precision == "bf16" else "float32")
        try:
            self.model = plugin.build(spec, **hparams)
        finally:
            keras.config.set_dtype_policy(before)
        # explicit, not Keras' "auto" (XLA whenever TensorFlow sees a GPU): see backends.common.Execution
        T.compile_model(self.model, optim, jit_compile=execution.compile)
        self.spec = spec
        self._step = None

    def versions(self) -> dict:
        v = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            v["tensorflow"] = tf.__version__
        return v

    def device_name(self) -> str:
        return "gpu" if _gpu() else f"cpu ({os.cpu_count()} cores)"

    def sync(self) -> None:
        pass  # train_on_batch returns a host float: the step has finished

    def train_step(self, batch: Batch) -> float:
        return T.train_step(self.model, batch)

    def eval_loss(self, batches) -> float:
        return T.eval_loss(self.model, batches)

    def parameters(self) -> dict:
        total = self.model.count_params()
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        components: dict[str, int] = {}
        for w in self.model.weights:
            top = w.path.split("/")[1] if "/" in w.path else w.path
            components[top] = components.get(top, 0) + int(np.prod(w.shape))
        return {"total": total, "trainable": trainable, "components": components}

    def greedy(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int) -> np.ndarray:
        ops = keras.ops
        state = self.model.init_state(global_feats, spatial_feats)
        b = global_feats.shape[0]
        tok = np.full((b,), self.spec.start_id, np.int32)
        done = np.zeros(b, bool)
        out = []
        for _ in range(max_len - 1):
            logits, state = self.model.step(state, tok)
            tok = np.where(done, self.spec.pad_id, ops.convert_to_numpy(ops.argmax(logits, -1))).astype(np.int32)
            out.append(tok)
            done |= tok == self.spec.end_id
            if done.all():
                break
        return np.stack(out, 1)

    def has_attention(self) -> bool:
        return hasattr(self.model, "attention_step")

    def greedy_attention(self, global_feats: np.ndarray, spatial_feats: np.ndarray, max_len: int):
        """Greedy captions and the attention weights behind each word: ([B, T], [B, T, positions])."""
        ops = keras.ops
        state = self.model.init_state(global_feats, spatial_feats)
        tok = np.full((global_feats.shape[0],), self.spec.start_id, np.int32)
        out, alphas = [], []
        for _ in range(max_len - 1):
            logits, state, alpha = self.model.attention_step(state, tok)
            tok = ops.convert_to_numpy(ops.argmax(logits, -1)).astype(np.int32)
            out.append(tok)
            alphas.append(ops.convert_to_numpy(alpha))
        return np.stack(out, 1), np.stack(alphas, 1)

    def beam(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int, beam: int,
             alpha: float = 0.0) -> np.ndarray:
        from backends.decoding import beam_search

        ops = keras.ops
        state = tuple(ops.repeat(x, beam, axis=0) for x in self.model.init_state(global_feats, spatial_feats))

        def step(state, tokens):
            logits, state = self.model.step(state, tokens.astype(np.int32))
            return ops.convert_to_numpy(ops.cast(logits, "float32")), state  # bf16 policy: bfloat16 logits

        def reorder(state, rows):
            return tuple(ops.take(x, rows, axis=0) for x in state)

        return beam_search(step, state, reorder, global_feats.shape[0], beam, max_len, self.spec.start_id,
                           self.spec.end_id, self.spec.pad_id, alpha)

    def save(self, path) -> str:
        """The model's weights only, one HDF5 dataset per variable path. Keras' own save_weights also
        writes the compiled optimizer's slots (Adam's m and v: three times the size of the model),
        which would make the size table compare different things across frameworks."""
        import h5py

        out = str(path) + ".h5"
        with h5py.File(out + ".tmp", "w") as f:
            for i, w in enumerate(self.model.weights):  # in model order; the path is kept for readers
                f[f"{i:04d}"] = keras.ops.convert_to_numpy(w)
                f[f"{i:04d}"].attrs["path"] = w.path
        os.replace(out + ".tmp", out)
        return out

    def load_file(self, path) -> None:
        """Weights written by save(), in model order (a second instance gets uniquified variable
        paths, so names cannot be the key); shapes are checked by set_weights. No code is loaded."""
        import h5py

        with h5py.File(str(path), "r") as f:
            self.model.set_weights([f[f"{i:04d}"][()] for i in range(len(self.model.weights))])

    def save_checkpoint(self, path) -> str:
        """All model state (weights and the dropout layers' seed generators: `model.variables`) and
        the optimizer's (iteration count, Adam's moments), in order: what a resumed run needs."""
        out = str(path) + ".npz"
        arrays = {f"model{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.variables)}
        arrays |= {f"optim{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.optimizer.variables)}
        with open(out + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(out + ".tmp", out)
        return out

    def load_checkpoint(self, path) -> None:
        with np.load(str(path)) as f:
            for i, v in enumerate(self.model.variables):
                v.assign(f[f"model{i:04d}"])
            for i, v in enumerate(self.model.optimizer.variables):
                v.assign(f[f"optim{i:04d}"])

    def peak_memory(self) -> tuple[float, str]:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host peak RSS"
