"""What the PyTorch plugins and the PyTorch backend's loss must agree on. It lives in the backend, the
layer the plugins build on: plugins import it from here."""

from __future__ import annotations

import torch


def real_positions(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T] bool, True before each caption's length: the positions that have a target.

    Training-mode plugins return logits at these positions only, [N, V] in (caption, time) order,
    and the backend's loss selects the targets with the same mask."""
    return torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
