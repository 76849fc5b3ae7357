"""The PyTorch backend behind benchmarks/worker.py: build, train, evaluate, decode, save, measure."""

from __future__ import annotations

import functools
import os
import random
import time

import numpy as np
import torch

from backends.common import EAGER_FP32, Execution, OptimConfig
from backends.torch import train as T
from shared_data.batches import Batch

FRAMEWORK = "torch"
FIXED_SHAPES = False  # eager PyTorch pays nothing for a new sequence length


def set_threads(n: int) -> None:
    """CPU threads of one run, when several runs share the machine (`--jobs N`)."""
    torch.set_num_threads(n)


def _decoding(method):
    """A decoding method: no gradients, and the run's precision (bf16 autocast or none)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.no_grad(), self._autocast():
            return method(self, *args, **kwargs)
    return wrapper


class Runner:
    def __init__(self, plugin, spec, hparams: dict, seed: int, optim: OptimConfig,
                 execution: Execution = EAGER_FP32):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.dev = T.device()
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
        return T.train_step(self.model, self.opt, batch, self.optim_cfg, self.dev, self.precision)

    def eval_loss(self, batches) -> float:
        return T.eval_loss(self.model, batches, self.dev, self.precision)

    def parameters(self) -> dict:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        components: dict[str, int] = {}
        for name, p in self.model.named_parameters():
            top = name.split(".")[0]
            components[top] = components.get(top, 0) + p.numel()
        return {"total": total, "trainable": trainable, "components": components}

    @_decoding
    def greedy(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int) -> np.ndarray:
        """Batched greedy decoding: [B, max_len-1] token ids (pads after <end>)."""
        m = self.model.eval()
        g = torch.from_numpy(global_feats).to(self.dev)
        s = None if spatial_feats is None else torch.from_numpy(spatial_feats).to(self.dev)
        state = m.init_state(g, s)
        tok = torch.full((g.shape[0],), self.spec.start_id, dtype=torch.long, device=self.dev)
        done = torch.zeros_like(tok, dtype=torch.bool)
        out = []
        for _ in range(max_len - 1):
            logits, state = m.step(state, tok)
            tok = logits.argmax(-1).masked_fill(done, self.spec.pad_id)
            out.append(tok)
            done |= tok == self.spec.end_id
            if bool(done.all()):
                break
        return torch.stack(out, 1).cpu().numpy()

    def has_attention(self) -> bool:
        return hasattr(self.model, "attention_step")

    @_decoding
    def greedy_attention(self, global_feats: np.ndarray, spatial_feats: np.ndarray, max_len: int):
        """Greedy captions and the attention weights behind each word: ([B, T], [B, T, positions]).

        For plugins with `attention_step(state, tokens) -> (logits, state, alpha)`."""
        m = self.model.eval()
        g = torch.from_numpy(global_feats).to(self.dev)
        state = m.init_state(g, torch.from_numpy(spatial_feats).to(self.dev))
        tok = torch.full((g.shape[0],), self.spec.start_id, dtype=torch.long, device=self.dev)
        out, alphas = [], []
        for _ in range(max_len - 1):
            logits, state, alpha = m.attention_step(state, tok)
            tok = logits.argmax(-1)
            out.append(tok)
            alphas.append(alpha)
        return torch.stack(out, 1).cpu().numpy(), torch.stack(alphas, 1).float().cpu().numpy()

    @_decoding
    def beam(self, global_feats: np.ndarray, spatial_feats: np.ndarray | None, max_len: int, beam: int,
             alpha: float = 0.0) -> np.ndarray:
        from backends.decoding import beam_search

        m = self.model.eval()
        g = torch.from_numpy(global_feats).to(self.dev)
        s = None if spatial_feats is None else torch.from_numpy(spatial_feats).to(self.dev)
        state = tuple(x.repeat_interleave(beam, 0) for x in m.init_state(g, s))

        def step(state, tokens):
            logits, state = m.step(state, torch.from_numpy(tokens).to(self.dev))
            return logits.float().cpu().numpy(), state

        def reorder(state, rows):
            idx = torch.from_numpy(rows).to(self.dev)
            return tuple(x.index_select(0, idx) for x in state)

        return beam_search(step, state, reorder, g.shape[0], beam, max_len, self.spec.start_id,
                           self.spec.end_id, self.spec.pad_id, alpha)

    def save(self, path) -> str:
        from safetensors.torch import save_file

        out = str(path) + ".safetensors"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, out + ".tmp")
        os.replace(out + ".tmp", out)
        return out

    def load_file(self, path) -> None:
        """Weights written by save(): safetensors holds tensors only, nothing is unpickled."""
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(path), device=str(self.dev)))

    def save_checkpoint(self, path) -> str:
        """Model, Adam's moments and the RNG state after an epoch: what a resumed run needs to go on
        exactly as if it had not stopped (the batches of an epoch depend on the seed and epoch only)."""
        out = str(path) + ".pt"
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "rng": torch.get_rng_state()}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.dev)
        torch.save(state, out + ".tmp")
        os.replace(out + ".tmp", out)  # a kill while writing leaves the previous checkpoint intact
        return out

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
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host peak RSS"


def now() -> float:
    return time.perf_counter()
