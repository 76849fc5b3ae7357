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

PRECISIONS = ("fp32", "bf16")
TORCH_API = "torch.nn"  # the label of a PyTorch plugin's API@engine (Keras plugins: Keras@<engine>)


def api_engine(framework: str, versions: dict) -> str:
    """The API a run's plugin is written in and the engine that ran it, in the words of every table:
    torch.nn, or Keras@<engine> (runs recorded before the engine was, ran on TensorFlow)."""
    return TORCH_API if framework == "torch" else f"Keras@{versions.get('keras_backend', 'tensorflow')}"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 5.0  # global gradient norm, as in Show, Attend and Tell's recipe

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Execution:
    """How a run executes, as opposed to what it computes: an explicit, reported axis for both
    frameworks, never a framework default. Keras' own default (`jit_compile="auto"`) turns XLA on
    by itself whenever TensorFlow sees a GPU while PyTorch stays eager: here neither compiles
    unless asked, and `compile=True` asks both (torch.compile / Keras `jit_compile=True`).

    precision "bf16" is mixed precision: weights, optimizer state and the loss in float32, matmuls
    and activations in bfloat16 (torch.autocast / Keras' "mixed_bfloat16" policy). bf16 needs no
    loss scaling, unlike fp16, which is why it is the one offered."""

    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile {self.compile!r}; use true or false")

    def to_json(self) -> dict:
        return asdict(self)


EAGER_FP32 = Execution()  # the default: fp32, nothing compiled
