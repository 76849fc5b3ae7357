"""The PyTorch backend behind benchmarks/run/worker/: build, train, evaluate, decode, save, measure.

The contract and the framework-free parts (decoding loops, parameter counting) are backends.runner's."""

from __future__ import annotations

import contextlib
import os
import random
import time

import numpy as np
import torch

from backends import runner as contract
from backends.common import EAGER_FP32, Execution, OptimConfig
from backends.torch import train as T
from shared_data import files
from shared_data.batches import Batch, PrefixBatch, to_width


class Runner(contract.Runner):
    FRAMEWORK = "torch"
    FIXED_SHAPES = False  # eager PyTorch pays nothing for a new sequence length

    def __init__(self, plugin, spec, hparams: dict, seed: int, optim: OptimConfig,
                 execution: Execution = EAGER_FP32):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.dev = T.device()
        if execution.precision == "fp32":
            T.ieee_fp32()
        self.model = plugin.build(spec, **hparams).to(self.dev)
        self.optim_cfg = optim
        self.opt = T.make_optimizer(self.model, optim)
        self.spec = spec
        self.precision = execution.precision
        if execution.compile:
            from torch._inductor import config as inductor

            # compiled dropout draws eager's random numbers: compiling changes the speed, not the run
            inductor.fallback_random = True
            # in place: forward() is compiled (on its first call, so the first step's time shows the
            # compilation), state_dict keys stay those of the plain module. Decoding's step() stays
            # eager, as Keras' jit_compile leaves a model's own methods eager.
            self.model.compile()
        # torch.compile unrolls a Python time loop (FIXED_LENGTH models) for one length and compiles again
        # for every other one, up to dynamo's recompile limit: under --compile their batches keep
        # max_length, as Keras' do under XLA (torch_show_attend_tell on the embedded dataset: 237 tokens/s
        # compiling per length against 1,269 eager, the README's "study engines_attention")
        self._fixed_length = execution.compile and getattr(self.model, "FIXED_LENGTH", False)

    @staticmethod
    def set_threads(n: int) -> None:
        """CPU threads of one run, when several runs share the machine (`--jobs N`)."""
        torch.set_num_threads(n)

    def _autocast(self):
        return T.autocast(self.dev, self.precision)

    def versions(self) -> dict:
        return {"torch": torch.__version__}

    def device_name(self) -> str:
        if self.dev.type == "cuda":
            return torch.cuda.get_device_name(self.dev)
        return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step(self, batch: Batch) -> float:
        return T.train_step(self.model, self.opt, self._width(batch), self.optim_cfg, self.dev, self.precision)

    def eval_loss(self, batches) -> float:
        return T.eval_loss(self.model, (self._width(b) for b in batches), self.dev, self.precision)

    def _width(self, batch: Batch) -> Batch:
        """The batch as this runner computes on it: at max_length for a compiled time loop, else as it is
        (cut to its longest caption by the harness)."""
        if not self._fixed_length:
            return batch
        return to_width(batch, self.spec.max_length - (1 if isinstance(batch, PrefixBatch) else 0))

    def batch_width(self) -> str:
        return contract.MAX_LENGTH if self._fixed_length else contract.LONGEST

    def save(self, path) -> str:
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        return str(files.write_atomic(str(path) + ".safetensors", lambda tmp: save_file(state, str(tmp))))

    def load_file(self, path) -> None:
        """Weights written by save(): safetensors holds tensors only, nothing is unpickled."""
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(path), device=str(self.dev)))

    def save_checkpoint(self, path) -> str:
        """Model, Adam's moments and the RNG state after an epoch: what a resumed run needs to go on
        exactly as if it had not stopped (the batches of an epoch depend on the seed and epoch only)."""
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "rng": torch.get_rng_state()}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.dev)
        return str(files.write_atomic(str(path) + ".pt", lambda tmp: torch.save(state, str(tmp))))

    def load_checkpoint(self, path) -> None:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only, no code
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.dev.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.dev)

    def peak_memory(self) -> tuple[float, str]:
        if self.dev.type == "cuda":
            return torch.cuda.max_memory_allocated(self.dev) / 2**20, "GPU allocator peak"
        return contract.host_peak_rss()

    # the primitives of backends.runner's shared decoding and parameter counting

    @contextlib.contextmanager
    def _decoding(self):
        """Decoding: dropout off, no gradients, and the run's precision (bf16 autocast or none)."""
        self.model.eval()
        with torch.no_grad(), self._autocast():
            yield

    @staticmethod
    def _weights(model):
        for name, p in model.named_parameters():
            yield name.split(".")[0], p.numel(), p.requires_grad

    FLOP_COUNTER = "FlopCounterMode"

    @staticmethod
    def count_flops(model, batch) -> float:
        """FlopCounterMode over one forward and backward pass. oneDNN is switched off while counting: its
        fused LSTM kernel is invisible to the counter, the reference implementation runs the same matmuls
        through ops the counter sees."""
        import warnings

        from torch.utils.flop_counter import FlopCounterMode

        dev = next(model.parameters()).device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # oneDNN's flags() warns about Intel-GPU TF32, irrelevant here
            # force_eager: a --compile run's model is counted op by op, as an eager one is
            with torch.backends.mkldnn.flags(enabled=False), torch.compiler.set_stance("force_eager"), \
                    FlopCounterMode(display=False) as counter:
                T.masked_loss(model, T.to_tensors(batch, dev), with_aux=True).backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / batch.num_tokens

    def _init_state(self, global_feats, spatial_feats):
        g = torch.from_numpy(global_feats).to(self.dev)
        s = None if spatial_feats is None else torch.from_numpy(spatial_feats).to(self.dev)
        return self.model.init_state(g, s)

    def _step(self, state, tokens):
        return self.model.step(state, torch.from_numpy(tokens).to(self.dev))

    def _attention_step(self, state, tokens):
        return self.model.attention_step(state, torch.from_numpy(tokens).to(self.dev))

    def _argmax(self, logits):
        return logits.argmax(-1).cpu().numpy()

    def _numpy(self, x):
        return x.float().cpu().numpy()

    def _repeat_rows(self, state, n):
        return tuple(x.repeat_interleave(n, 0) for x in state)

    def _take_rows(self, state, rows):
        idx = torch.from_numpy(rows).to(self.dev)
        return tuple(x.index_select(0, idx) for x in state)


# the module-level names benchmarks/ reads before building a Runner: the class's own
FRAMEWORK = Runner.FRAMEWORK
FIXED_SHAPES = Runner.FIXED_SHAPES
set_threads = Runner.set_threads


def now() -> float:
    return time.perf_counter()
