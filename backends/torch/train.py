"""The PyTorch side of the training protocol: one optimizer step and the evaluation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backends.common import OptimConfig
from backends.torch.common import real_positions
from shared_data.batches import Batch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ieee_fp32() -> None:
    """float32 matmuls, convolutions and cuDNN RNNs in IEEE fp32, never TF32 tensor cores (PyTorch's matmul
    default already; cuDNN's is TF32): what `--precision fp32` means on every engine. No effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def autocast(dev: torch.device, precision: str):
    """bf16 mixed precision around forward passes (the loss is taken in float32, see masked_loss);
    a no-op context for fp32."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def to_tensors(batch: Batch, dev: torch.device) -> dict:
    return {
        "global": torch.from_numpy(batch.global_feats).to(dev, non_blocking=True),
        "spatial": None if batch.spatial_feats is None else torch.from_numpy(batch.spatial_feats).to(dev),
        "inputs": torch.from_numpy(batch.inputs).to(dev, torch.long),
        "targets": torch.from_numpy(batch.targets).to(dev, torch.long),
        "lengths": torch.from_numpy(batch.lengths - 1),  # input lengths (after dropping <end>); stays on CPU
    }


def masked_loss(model: torch.nn.Module, t: dict, with_aux: bool = False) -> torch.Tensor:
    """Token-mean cross-entropy; with_aux adds the plugin's own regulariser when it has one.

    A plugin's forward returns logits [B, T, V], or [N, V] at the real input positions only (those
    before each caption's length, in (caption, time) order: pads then cost no output-layer FLOPs),
    or either with aux, (logits, aux), where aux is a scalar the architecture
    trains with (Show, Attend and Tell's attention regulariser, the Transformer seed's EOS
    suppression). Training optimises CE + aux; validation loss is CE alone, comparable across plugins."""
    out = model(t["global"], t["spatial"], t["inputs"], t["lengths"])
    logits, aux = out if isinstance(out, tuple) else (out, None)
    targets = t["targets"]
    if logits.dim() == 2:  # [N, V]: the plugin computed only the real input positions, (caption, time) order
        targets = targets[real_positions(targets, t["lengths"])]
    # ignore_index=0 drops pads from both the sum and the count: a mean over real target tokens
    # .float(): under bf16 autocast the logits arrive in bfloat16; the softmax is taken in float32, as Keras'
    # mixed policy does (its loss casts predictions to float32). A no-op in fp32.
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=0)
    return loss + aux if with_aux and aux is not None else loss


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Batch, cfg: OptimConfig,
               dev: torch.device, precision: str = "fp32") -> float:
    model.train()
    with autocast(dev, precision):
        loss = masked_loss(model, to_tensors(batch, dev), with_aux=True)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batches, dev: torch.device, precision: str = "fp32") -> float:
    """Token-weighted mean loss over batches (dropout off)."""
    model.eval()
    total = tokens = 0.0
    for b in batches:
        n = b.num_tokens
        with autocast(dev, precision):
            total += float(masked_loss(model, to_tensors(b, dev))) * n
        tokens += n
    return total / max(tokens, 1)
