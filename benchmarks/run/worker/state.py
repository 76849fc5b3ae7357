"""What the worker's phases pass on: the loop's state (checkpointed every epoch), progress lines
for the study's bars, and the exit codes the study reads."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

PROGRESS = "@progress "  # lines the study turns into a progress bar instead of logging them


class Progress:
    """At most a few lines a second on stdout: `@progress {"phase", "done", "total"}`."""

    def __init__(self, phase: str, total: int):
        self.phase, self.total, self.last = phase, total, 0.0

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last > 0.25:
            self.last = now
            print(PROGRESS + json.dumps({"phase": self.phase, "done": done, "total": self.total}), flush=True)


@dataclass
class LoopState:
    """Everything the training loop carries from epoch to epoch: what a checkpoint saves."""

    epoch: int = 0
    step: int = 0
    train_time: float = 0.0
    first_step_s: float | None = None
    val_eval_s: float = 0.0  # per-epoch validation (loss and decoded BLEU-4)
    steady_tokens: int = 0  # after WARMUP_STEPS: the throughput figures
    steady_captions: int = 0
    steady_time: float = 0.0
    history: list = field(default_factory=list)  # one row per epoch
    best_bleu4: float = -1.0
    best_epoch: int = 0
    best_file: str | None = None  # weights of the best epoch so far, in the run folder
    patience_left: float = math.inf
    tokens: int = 0  # target tokens trained on, all steps
    reached: dict | None = None  # time to target: training time, epoch, step, tokens when first met


class Diverged(Exception):
    """A NaN/inf loss before any epoch could be evaluated: a row marked diverged, not a crash."""


DIVERGED_EXIT = 3


NOT_REACHED = "not reached"  # the status of a time-to-target run that hit its cap first
