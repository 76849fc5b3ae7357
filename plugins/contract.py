"""What a plugin's model must provide, as types: one Protocol per framework.

The harness (backends/<framework>/train.py and runner.py) trains, decodes, saves and counts any model
that fits these, so a plugin file is a model and a `register` line, nothing more. Shapes: B images
(or captions), T positions, V words, D the pooled vector's width, P grid positions of C channels.
`tests/test_every_plugin.py` checks every registered plugin against its framework's Protocol.
Framework-free: the tensors are typed `Any` so that this module imports neither framework.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

State = tuple  # a decoding state: a tuple of tensors, each batch-first, so beam search can reorder rows
# A model may set the class attribute IMAGE_STATE = k: the state's first k entries depend on the image
# alone and step returns them unchanged, so reordering an image's hypotheses need not copy them
# (in Show, Attend and Tell they are most of the state). tests/test_every_plugin.py holds it to that.


@runtime_checkable
class TorchCaptioner(Protocol):
    """A torch.nn.Module built by `builder(spec: ModelSpec, **hparams)`."""

    def forward(self, global_feats: Any, spatial_feats: Any, tokens: Any, lengths: Any) -> Any:
        """Teacher forcing. global_feats [B, D] float, spatial_feats [B, P, C] float or None (None unless
        the plugin reads the grid), tokens [B, T] int64 (<start> then words, <pad> after), lengths [B]
        int64 on the CPU (real positions per row). Returns logits [B, T, V]; while training it may return
        [N, V] at the N real positions only (row by row, position by position), and either may come as
        (logits, aux) with aux a scalar loss the architecture trains with (added to the cross-entropy
        in training, left out of the validation loss)."""

    def init_state(self, global_feats: Any, spatial_feats: Any) -> State:
        """The decoding state before <start>, for B images."""

    def step(self, state: State, tokens: Any) -> tuple[Any, State]:
        """One decoding step: tokens [B] int64, the previous words -> (logits [B, V], next state)."""


@runtime_checkable
class KerasCaptioner(Protocol):
    """A keras.Model built by `builder(spec: ModelSpec, **hparams)`, its weights created in __init__
    (so that parameter counts and loading work before training)."""

    def call(self, inputs: dict, training: bool = False) -> Any:
        """Teacher forcing. inputs {"global": [B, D], "tokens": [B, T] int32, "spatial": [B, P, C] when
        the plugin reads the grid} -> logits [B, T, V]. An architecture's own regulariser is added with
        `self.add_loss(...)` when `training` is true: train_on_batch optimises CE + it, test_on_batch
        reports CE alone. A model whose time loop is unrolled over a static length sets the class
        attribute FIXED_LENGTH = True: its batches then keep max_length."""

    def init_state(self, global_feats: Any, spatial_feats: Any) -> State:
        """The decoding state before <start>, for B images."""

    def step(self, state: State, tokens: Any) -> tuple[Any, State]:
        """One decoding step: tokens [B] int, the previous words -> (logits [B, V], next state)."""


@runtime_checkable
class Attends(Protocol):
    """Optional, in either framework: the attention behind each word (attention maps, `caption --attention`)."""

    def attention_step(self, state: State, tokens: Any) -> tuple[Any, State, Any]:
        """As `step`, plus alpha [B, P]: the weight of each grid position, summing to 1."""


CONTRACTS = {"torch": TorchCaptioner, "keras": KerasCaptioner}
