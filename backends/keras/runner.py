"""The Keras backend behind benchmarks/run/worker/. The Keras backend (tensorflow, jax, torch) is
chosen by KERAS_BACKEND, which the worker sets before the first import of keras.

The contract and the framework-free parts (decoding loops, parameter counting) are backends.runner's."""

from __future__ import annotations

import os

import keras
import numpy as np

from backends import runner as contract
from backends.common import EAGER_FP32, Execution, OptimConfig
from backends.keras import train as T
from shared_data import files
from shared_data.batches import Batch


def _gpu_name() -> str | None:
    """The accelerator the engine computes on (its name), or None on the CPU."""
    engine = keras.backend.backend()
    if engine == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else None
    if engine == "jax":
        import jax

        return jax.devices()[0].device_kind if jax.default_backend() == "gpu" else None
    if engine == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return None


def ieee_fp32() -> None:
    """fp32 means IEEE float32 matmuls on every engine. On an Ampere-or-later GPU, TensorFlow and JAX
    default to TF32 tensor cores (10-bit mantissa) for float32 matmuls and PyTorch does not: left alone,
    "Keras vs PyTorch" on a GPU would silently be "TF32 vs fp32". No effect on a CPU."""
    engine = keras.backend.backend()
    if engine == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif engine == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif engine == "torch":
        from backends.torch.train import ieee_fp32 as torch_ieee_fp32

        torch_ieee_fp32()


class Runner(contract.Runner):
    FRAMEWORK = "keras"
    # graph compilers retrace for every new input shape: feed fixed-length (max_length) batches, which
    # hold the same tokens as everyone else's and whose extra pads the loss masks out
    FIXED_SHAPES = True
    PREFIX_PADDING = "pre"  # the Keras recipe's: its models mask, so leading pads are skipped

    def __init__(self, plugin, spec, hparams: dict, seed: int, optim: OptimConfig,
                 execution: Execution = EAGER_FP32):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)  # share the card, measure honestly
        keras.utils.set_random_seed(seed)
        if execution.precision == "fp32":
            ieee_fp32()
        # layers take the dtype policy in force when they are built; restored after, for the next Runner
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if execution.precision == "bf16" else "float32")
        try:
            self.model = plugin.build(spec, **hparams)
        finally:
            keras.config.set_dtype_policy(before)
        # explicit, not Keras' "auto" (XLA whenever TensorFlow sees a GPU): see backends.common.Execution
        T.compile_model(self.model, optim, compile=execution.compile)
        self.spec = spec
        self._decode_fns = {}

    @staticmethod
    def set_threads(n: int) -> None:
        """CPU threads of one run, when several runs share the machine (`--jobs N`); before any op runs."""
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        elif keras.backend.backend() == "torch":
            import torch

            torch.set_num_threads(n)

    def versions(self) -> dict:
        v = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            v["tensorflow"] = tf.__version__
        return v

    def device_name(self) -> str:
        return _gpu_name() or f"cpu ({os.cpu_count()} cores)"

    def sync(self) -> None:
        pass  # train_on_batch returns a host float: the step has finished

    def train_step(self, batch: Batch) -> float:
        return T.train_step(self.model, batch)

    def batch_width(self) -> str:
        return contract.LONGEST if T.cuts_to_longest(self.model) else contract.MAX_LENGTH

    def eval_loss(self, batches) -> float:
        return T.eval_loss(self.model, batches)

    def save(self, path) -> str:
        """The model's weights only, one HDF5 dataset per variable path. Keras' own save_weights also
        writes the compiled optimizer's slots (Adam's m and v: three times the size of the model),
        which would make the size table compare different things across frameworks."""
        import h5py

        def write(tmp):
            with h5py.File(tmp, "w") as f:
                for i, w in enumerate(self.model.weights):  # in model order; the path is kept for readers
                    f[f"{i:04d}"] = keras.ops.convert_to_numpy(w)
                    f[f"{i:04d}"].attrs["path"] = w.path

        return str(files.write_atomic(str(path) + ".h5", lambda tmp: write(str(tmp))))

    def load_file(self, path) -> None:
        """Weights written by save(), in model order (a second instance gets uniquified variable
        paths, so names cannot be the key); shapes are checked by set_weights. No code is loaded."""
        import h5py

        with h5py.File(str(path), "r") as f:
            self.model.set_weights([f[f"{i:04d}"][()] for i in range(len(self.model.weights))])

    def save_checkpoint(self, path) -> str:
        """All model state (weights and the dropout layers' seed generators: `model.variables`) and
        the optimizer's (iteration count, Adam's moments), in order: what a resumed run needs."""
        arrays = {f"model{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.variables)}
        arrays |= {f"optim{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.optimizer.variables)}

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        return str(files.write_atomic(str(path) + ".npz", lambda tmp: write(str(tmp))))

    def load_checkpoint(self, path) -> None:
        with np.load(str(path)) as f:
            for i, v in enumerate(self.model.variables):
                v.assign(f[f"model{i:04d}"])
            for i, v in enumerate(self.model.optimizer.variables):
                v.assign(f[f"optim{i:04d}"])

    # peak_memory: the base class's host peak RSS (Keras exposes no allocator peak on every backend)

    # the primitives of backends.runner's shared decoding and parameter counting

    @staticmethod
    def _weights(model):
        trainable = {id(w) for w in model.trainable_weights}
        for w in model.weights:
            top = w.path.split("/")[1] if "/" in w.path else w.path
            yield top, int(np.prod(w.shape)), id(w) in trainable

    def _init_state(self, global_feats, spatial_feats):
        return self._decoding_fn("init_state")(global_feats, spatial_feats)

    def _step(self, state, tokens):
        return self._decoding_fn("step")(state, tokens.astype(np.int32))

    def _attention_step(self, state, tokens):
        return self._decoding_fn("attention_step")(state, tokens.astype(np.int32))

    def _decoding_fn(self, name: str):
        """The model's decoding method; on JAX, compiled with jax.jit (once per input shape). Eager JAX
        dispatches and compiles op by op, which made a test split's beam search take minutes where
        TensorFlow's eager ops take seconds. The variables enter as arguments through a StatelessScope,
        Keras' way of calling a layer functionally, so no weight is baked into the program as a constant."""
        fn = getattr(self.model, name)
        if keras.backend.backend() != "jax":
            return fn
        if name not in self._decode_fns:
            import jax

            variables = self.model.variables

            def pure(values, *args):
                with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                    return fn(*args)

            jitted = jax.jit(pure)
            self._decode_fns[name] = lambda *args: jitted([v.value for v in variables], *args)
        return self._decode_fns[name]

    def _argmax(self, logits):
        return keras.ops.convert_to_numpy(keras.ops.argmax(logits, -1))

    def _numpy(self, x):
        return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))  # bf16 policy: bfloat16 tensors

    def _repeat_rows(self, state, n):
        return tuple(keras.ops.repeat(x, n, axis=0) for x in state)

    def _take_rows(self, state, rows):
        return tuple(keras.ops.take(x, rows, axis=0) for x in state)


# the module-level names benchmarks/ reads before building a Runner: the class's own
FRAMEWORK = Runner.FRAMEWORK
FIXED_SHAPES = Runner.FIXED_SHAPES
set_threads = Runner.set_threads
