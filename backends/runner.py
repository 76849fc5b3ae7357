"""The backend contract, as a type: what benchmarks/run/worker/ and benchmarks/perf/measure.py may ask of a framework.

A framework backend is a module `backends.<framework>.runner` holding a `Runner`, a subclass of the
abstract `Runner` below, and two module-level names the harness reads before it builds one:

    FIXED_SHAPES  bool: feed fixed-length (max_length) batches (graph compilers retrace per new shape)
    set_threads   set_threads(n): CPU threads of one run, called before any framework op runs

Both are the class's own (`FIXED_SHAPES = Runner.FIXED_SHAPES`, `set_threads = Runner.set_threads`),
so that the type holds the whole contract; `check_backend(module)` checks a module against it.

What does not depend on the framework is written here once: the decoding loops (greedy, greedy with
attention, beam search, whose search itself is backends/decoding.py), parameter counting by component,
`has_attention` and the host peak-RSS fallback. A backend supplies the framework primitives they run
on (the `_` methods below: build the decoder state, one decoder step, argmax, to-numpy, repeat and
select state rows) and everything else itself; it writes its files through shared_data.files, which
writes atomically.

Abstract methods are enforced at construction: a Runner subclass that misses one, or that sets no
`FIXED_SHAPES`, cannot be instantiated (TypeError).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from backends.common import EAGER_FP32, Execution, OptimConfig
from backends.decoding import beam_search, greedy_attention_search, greedy_search, sample_search

# the harness-facing names: what benchmarks/ calls on a runner, and the module-level ones
METHODS = ("train_step", "eval_loss", "greedy", "beam", "greedy_attention", "has_attention", "parameters",
           "save", "load_file", "save_checkpoint", "load_checkpoint", "sync", "peak_memory", "device_name",
           "versions")
ATTRIBUTES = ("model", "spec")
MODULE_NAMES = ("Runner", "FIXED_SHAPES", "set_threads")
MAX_LENGTH, LONGEST = "max length", "longest in batch"  # Runner.batch_width's answers


class Runner(ABC):
    """One model of one plugin in one framework: build, train, evaluate, decode, save, measure.

    Built as `Runner(plugin, spec, hparams, seed, optim, execution)`; afterwards `model` is the
    framework's model (the plugin's own module, e.g. for FLOP counting) and `spec` the ModelSpec it
    was built for (start/end/pad ids among others)."""

    FRAMEWORK: ClassVar[str]  # "torch", "keras": the plugin registry's framework prefix
    FIXED_SHAPES: ClassVar[bool]  # see the module docstring
    # where --training prefix pads a prefix: "post" for models that do not mask (leading pads would
    # run through their recurrence); the Keras recipe's "pre" where models mask leading pads away
    PREFIX_PADDING: ClassVar[str] = "post"

    model: Any
    spec: Any  # a ModelSpec from the plugin registry, duck-typed: backends/ sits below the plugin layer

    def __new__(cls, *args, **kwargs):
        if not isinstance(getattr(cls, "FIXED_SHAPES", None), bool):
            raise TypeError(f"Can't instantiate {cls.__name__}: it sets no FIXED_SHAPES (True or False)")
        return super().__new__(cls)  # object.__new__ refuses a class with abstract methods left

    # --- construction and the module-level hooks ---------------------------------------------------

    @abstractmethod
    def __init__(self, plugin, spec, hparams: dict, seed: int, optim: OptimConfig,
                 execution: Execution = EAGER_FP32):
        """Seed every RNG the framework draws from with `seed`, build `plugin.build(spec, **hparams)`
        under `execution` (precision, compilation) and its Adam optimizer from `optim`; set `model`
        and `spec`."""

    @staticmethod
    @abstractmethod
    def set_threads(n: int) -> None:
        """CPU threads of one run, when several runs share the machine (`--jobs N`); called before the
        first Runner is built and before any framework op runs. Exported as the module's set_threads."""

    # --- about the run -----------------------------------------------------------------------------

    @abstractmethod
    def versions(self) -> dict:
        """The framework's package versions, {name: version}, for the run's metrics."""

    @abstractmethod
    def device_name(self) -> str:
        """What the model runs on, in words (the GPU's name, or the CPU's cores and threads)."""

    @abstractmethod
    def sync(self) -> None:
        """Block until all work queued on the device has finished: timings are taken after it."""

    def batch_width(self) -> str:
        """How wide the batches this runner trains on are, in words, for the speed table: the harness pads
        them to max_length when FIXED_SHAPES; a backend that cuts them again overrides this."""
        return MAX_LENGTH if self.FIXED_SHAPES else LONGEST

    def peak_memory(self) -> tuple[float, str]:
        """(MiB, what was measured): the peak memory of the run so far. Here the host's peak RSS; a
        backend with a device allocator that reports its own peak overrides it."""
        return host_peak_rss()

    # --- training ----------------------------------------------------------------------------------

    @abstractmethod
    def train_step(self, batch) -> float:
        """One optimizer step on a shared_data.batches.Batch (dropout on): the training loss, CE plus
        the plugin's own regulariser if it has one, as a host float (nan/inf when it diverged)."""

    @abstractmethod
    def eval_loss(self, batches) -> float:
        """Token-weighted mean cross-entropy over an iterable of Batches, dropout off, no regulariser:
        the validation loss, comparable across plugins and frameworks (backends.common)."""

    def parameters(self) -> dict:
        """{"total", "trainable", "components": {top-level component: count}} over the model's weights."""
        return self.count_parameters(self.model)

    @classmethod
    def count_parameters(cls, model) -> dict:
        """parameters() of a model built by a plugin of this framework, without a Runner around it."""
        total = trainable = 0
        components: dict[str, int] = {}
        for component, size, is_trainable in cls._weights(model):
            total += size
            trainable += size if is_trainable else 0
            components[component] = components.get(component, 0) + size
        return {"total": total, "trainable": trainable, "components": components}

    # --- decoding (framework-free loops over the primitives below) ---------------------------------

    def greedy(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int) -> np.ndarray:
        """Batched greedy decoding: [B, <= max_len-1] token ids, pads after <end>; stops when all ended."""
        with self._decoding():
            state = self._init_state(global_feats, spatial_feats)

            def step(state, tokens):
                logits, state = self._step(state, tokens)
                return self._argmax(logits), state

            return greedy_search(step, state, len(global_feats), max_len, self.spec.start_id,
                                 self.spec.end_id, self.spec.pad_id)

    def has_attention(self) -> bool:
        """Whether the plugin has `attention_step(state, tokens) -> (logits, state, alpha)`."""
        return hasattr(self.model, "attention_step")

    def greedy_attention(self, global_feats: np.ndarray, spatial_feats: np.ndarray, max_len: int):
        """Greedy captions and the attention weights behind each word: ([B, max_len-1], [B, max_len-1,
        positions] float32), for plugins with attention (has_attention())."""
        with self._decoding():
            state = self._init_state(global_feats, spatial_feats)

            def step(state, tokens):
                logits, state, alpha = self._attention_step(state, tokens)
                return self._argmax(logits), state, self._numpy(alpha)

            return greedy_attention_search(step, state, len(global_feats), max_len, self.spec.start_id)

    def beam(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int, beam: int,
             alpha: float = 0.0, block_trigrams: bool = False, groups: int = 1, diversity: float = 0.0,
             top: int = 1) -> np.ndarray:
        """Batched beam search (backends.decoding.beam_search) with `beam` hypotheses per image and GNMT
        length normalisation `alpha`, diverse with `groups` > 1: [B * top, <= max_len-1] token ids of
        each image's `top` best hypotheses (image b's in rows b*top .. b*top+top-1)."""
        with self._decoding():
            state = self._repeat_rows(self._init_state(global_feats, spatial_feats), beam)
            return beam_search(self._logits_step, state, self._take_rows, len(global_feats), beam, max_len,
                               self.spec.start_id, self.spec.end_id, self.spec.pad_id, alpha, block_trigrams,
                               groups, diversity, top, self._regroup)

    def sample(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int, seed: int | list[int],
               n: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               block_trigrams: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`n` sampled captions per image (backends.decoding.sample_search), image b's in rows b*n ..
        b*n+n-1: ([B*n, <= max_len-1] token ids, [B*n] each caption's log-probability under the model)."""
        with self._decoding():
            state = self._repeat_rows(self._init_state(global_feats, spatial_feats), n)
            return sample_search(self._logits_step, state, len(global_feats) * n, max_len, self.spec.start_id,
                                 self.spec.end_id, self.spec.pad_id, np.random.default_rng(seed), temperature,
                                 top_k, top_p, block_trigrams, self._take_rows)

    def log_prob(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, tokens: np.ndarray) -> np.ndarray:
        """[B] the model's log-probability of each caption in `tokens` [B, T] (as decoding returns them:
        words, <end>, then <pad>), summed up to and including its <end>."""
        from backends.decoding import log_softmax

        with self._decoding():
            state = self._init_state(global_feats, spatial_feats)
            prev = np.full(len(tokens), self.spec.start_id, np.int64)
            total, live = np.zeros(len(tokens)), np.ones(len(tokens), bool)
            for t in range(tokens.shape[1]):
                logits, state = self._logits_step(state, prev)
                word = tokens[:, t].astype(np.int64)
                total += np.where(live, log_softmax(np.asarray(logits, np.float64))[np.arange(len(word)), word], 0.0)
                live &= (word != self.spec.end_id) & (word != self.spec.pad_id)
                if not live.any():
                    break
                prev = word
            return total

    def state_bytes(self, feats) -> int:
        """Bytes of one row's decoding state (as float32), from the first image of `feats` (a dataset's
        features, shared_data.dataset): what decoding batches are sized by."""
        g = np.asarray(feats.global_[:1], np.float32)
        s = None if feats.spatial is None else np.asarray(feats.spatial[:1], np.float32)
        with self._decoding():
            return sum(self._numpy(x).nbytes for x in self._init_state(g, s))

    def _regroup(self, state: tuple, rows: np.ndarray) -> tuple:
        """_take_rows for rows that stay among their image's: the plugin's IMAGE_STATE first entries
        (the image's own, equal in all its rows and passed through by step) stay where they are."""
        k = getattr(self.model, "IMAGE_STATE", 0)
        return tuple(state[:k]) + tuple(self._take_rows(tuple(state[k:]), rows))

    def _logits_step(self, state, tokens):
        logits, state = self._step(state, tokens)
        return self._numpy(logits), state

    # --- files -------------------------------------------------------------------------------------

    @abstractmethod
    def save(self, path) -> str:
        """Write the model's weights only (no optimizer state, no code) to `path` + the framework's
        suffix, atomically; return the file's path. Its size is the run's weights_bytes."""

    @abstractmethod
    def load_file(self, path) -> None:
        """Load weights written by save() into this model (same plugin, spec and hparams)."""

    @abstractmethod
    def save_checkpoint(self, path) -> str:
        """Write everything a resumed run needs to go on exactly as if it had not stopped (model, the
        optimizer's state, RNG state) to `path` + a suffix, atomically; return the file's path."""

    @abstractmethod
    def load_checkpoint(self, path) -> None:
        """Restore the state written by save_checkpoint()."""

    # --- the framework primitives the shared code above runs on --------------------------------------

    def _decoding(self) -> contextlib.AbstractContextManager:
        """The context every decoding method runs in (e.g. no gradients, the run's precision)."""
        return contextlib.nullcontext()

    FLOP_COUNTER: ClassVar[str | None] = None  # what count_flops uses; None: this framework has none

    @staticmethod
    def count_flops(model, batch) -> float | None:
        """The model's FLOPs for one forward and backward pass of `batch`, per target token; None where
        the framework has no counter (perf then counts the torch twin, the same layers and shapes)."""
        return None

    @staticmethod
    @abstractmethod
    def _weights(model) -> Iterable[tuple[str, int, bool]]:
        """(top-level component, number of scalars, trainable) for every weight of the model, once each."""

    @abstractmethod
    def _init_state(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None) -> tuple:
        """The plugin's initial decoder state for a batch of images: a tuple of [B, ...] framework tensors."""

    @abstractmethod
    def _step(self, state: tuple, tokens: np.ndarray) -> tuple[Any, tuple]:
        """One decoder step on int64 numpy tokens [B]: (framework logits [B, V], new state)."""

    @abstractmethod
    def _attention_step(self, state: tuple, tokens: np.ndarray) -> tuple[Any, tuple, Any]:
        """As _step, through the plugin's attention_step: (logits [B, V], new state, alpha [B, positions])."""

    @abstractmethod
    def _argmax(self, logits) -> np.ndarray:
        """The highest-scoring token of each row, computed by the framework: [B] int64 numpy."""

    @abstractmethod
    def _numpy(self, x) -> np.ndarray:
        """A framework tensor as a float32 numpy array (bf16 values are exact in float32)."""

    @abstractmethod
    def _repeat_rows(self, state: tuple, n: int) -> tuple:
        """Each row of every state tensor `n` times in a row (rows b*n .. b*n+n-1 are image b's)."""

    @abstractmethod
    def _take_rows(self, state: tuple, rows: np.ndarray) -> tuple:
        """The state tensors' rows `rows` (an int64 numpy index), in that order."""


def host_peak_rss() -> tuple[float, str]:
    """The process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host peak RSS"


def check_backend(module) -> type[Runner]:
    """A backend module's Runner, after checking the module against the contract (TypeError if not)."""
    missing = [n for n in MODULE_NAMES if not hasattr(module, n)]
    if missing:
        raise TypeError(f"{module.__name__} lacks {', '.join(missing)}")
    cls = module.Runner
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise TypeError(f"{module.__name__}.Runner is not a backends.runner.Runner")
    if cls.__abstractmethods__:
        raise TypeError(f"{module.__name__}.Runner leaves {', '.join(sorted(cls.__abstractmethods__))} abstract")
    if not isinstance(getattr(cls, "FIXED_SHAPES", None), bool) or module.FIXED_SHAPES is not cls.FIXED_SHAPES:
        raise TypeError(f"{module.__name__}.FIXED_SHAPES must be a bool, the Runner's own")
    if module.set_threads is not cls.set_threads:
        raise TypeError(f"{module.__name__}.set_threads must be Runner.set_threads")
    return cls

