"""What the PyTorch plugins and the PyTorch backend's loss must agree on (no plugin registers here).

Defined in backends/torch/common.py (backends never import plugins); re-exported here for plugins
written against this module."""

from __future__ import annotations

from backends.torch.common import real_positions

__all__ = ["real_positions"]
