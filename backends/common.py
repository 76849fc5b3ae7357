"""What both backends share and must agree on: the optimizer settings and the loss definition.

The loss is cross-entropy per target token, padding masked, averaged over the real tokens of the
batch (not over B*T positions, not per caption): the torch backend computes it by hand, the Keras
backend with `reduction="mean_with_sample_weight"` and the pad mask as sample weight.

Adam is given explicit lr, betas and eps everywhere, because the frameworks' defaults differ
(eps 1e-7 in Keras, 1e-8 in PyTorch). Even with equal eps the two differ in where eps enters:
PyTorch divides by sqrt(v_hat) + eps, Keras by sqrt(v) + eps with the bias correction folded into
the step size, i.e. Keras' eps acts like PyTorch's eps / sqrt(1 - beta2^t). That residual difference
is part of "the framework" and is bounded by the parity test's tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 5.0  # global gradient norm, as in Show, Attend and Tell's recipe

    def to_json(self) -> dict:
        return asdict(self)
