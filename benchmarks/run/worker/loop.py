"""The training loop: epochs under the budget, validation after each, the best epoch's weights and a
checkpoint on disk after each, so that a killed run resumes from its last epoch."""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.run.worker.context import Context, training_batches
from benchmarks.run.worker.evaluate import decode_split
from benchmarks.run.worker.state import NOT_REACHED, Diverged, LoopState, Progress

WARMUP_STEPS = 5  # excluded from throughput: graph building, allocator warm-up, caches


@dataclass
class Budget:
    """The run's limits, infinite where unset."""
    epochs: float
    steps: float
    time_s: float
    patience: float

    @classmethod
    def of(cls, settings) -> Budget:
        b = settings.budget()
        return cls(b["epochs"] or math.inf, b["steps"] or math.inf, b["time_budget"] or math.inf,
                   settings.patience or math.inf)

    def more_epochs(self, st: LoopState) -> bool:
        return (st.patience_left > 0 and st.epoch < self.epochs and st.step < self.steps
                and st.train_time < self.time_s and st.reached is None)


def train(ctx: Context) -> tuple[LoopState, LoopState | None, str, int]:
    """The training loop under the budget, with per-epoch validation, best-epoch weights and
    checkpoints: (final state, state it resumed from, status, steps per epoch)."""
    from benchmarks.store import rundir
    from benchmarks.store.scalars import open_scalars
    from shared_data.batches import CaptionTable, num_batches

    s, run_dir, ds = ctx.settings, ctx.run_dir, ctx.ds
    table, train_batches = training_batches(ctx)
    val_table = CaptionTable(ds.splits["val"], ds.vocab, ds.max_length)
    steps_per_epoch = (sum(1 for _ in train_batches(0)) if s.training == "prefix"
                       else num_batches(len(table), s.batch_size))
    budget = Budget.of(s)
    st, ckpt = _resume(ctx, budget)
    resumed = LoopState(**asdict(st))  # the earlier attempts' share, kept out of this process's time split
    status = "ok"
    ctx.scalars = open_scalars(run_dir, ctx.cfg.get("tensorboard", False), resume_step=st.step if ckpt else None)
    # patience_left is part of the state: a run killed after its early-stop epoch does not train on
    while budget.more_epochs(st):
        losses = _train_epoch(ctx, st, train_batches(st.epoch), budget, steps_per_epoch)
        if losses is None:
            status = "diverged"
            break
        st.epoch += 1
        row = _validate(ctx, st, losses, val_table)
        if row is None:
            status = "diverged"
            break
        _keep_best(ctx, st, row, budget)
        print(json.dumps(row), flush=True)
        if st.patience_left <= 0:
            print(f"early stop after epoch {st.epoch}", flush=True)
    rundir.write_history(run_dir, st.history)
    if s.target is not None and st.reached is None and status == "ok":
        status = NOT_REACHED
    if status == "diverged" and st.best_file is None:
        ctx.scalars.close()
        unverified = "" if ctx.cfg.get("verify", True) else "; or the features hold NaN: run without --no-verify"
        raise Diverged(f"diverged: non-finite loss at step {st.step}, before any epoch finished "
                       f"(lower --lr or --clip-norm{unverified})")
    return st, (resumed if ckpt is not None else None), status, steps_per_epoch


def _resume(ctx: Context, budget: Budget) -> tuple[LoopState, dict | None]:
    """The loop's state from the run's checkpoint (same configuration hash), or a fresh one."""
    from benchmarks.store import rundir
    from shared_data.errors import UserError

    run_dir = ctx.run_dir
    ckpt = rundir.read_checkpoint(run_dir, ctx.cfg.get("config_hash"))
    if ckpt is None:
        return LoopState(patience_left=budget.patience), None
    try:
        ctx.runner.load_checkpoint(run_dir / ckpt["file"])
        st = LoopState(**ckpt["loop"])
    except Exception as e:  # a checkpoint the runner cannot read: say which, and how to go on
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"checkpoint {run_dir / ckpt['file']} cannot be loaded ({type(e).__name__}: {first}); "
                        "delete it or rerun with --force") from None
    print(f"resumed from the checkpoint after epoch {st.epoch} (step {st.step})", flush=True)
    return st, ckpt


def _train_epoch(ctx: Context, st: LoopState, batches, budget: Budget, steps_per_epoch: int) -> list | None:
    """One epoch's steps (fewer when the step or time budget ends first): the losses, None if one was
    not finite."""
    losses = []
    progress = Progress(f"train epoch {st.epoch + 1}", steps_per_epoch)
    batches = iter(batches)
    for i in itertools.count():
        progress(i)
        # the wait for the batch counts: with features read from disk, input is part of training
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        loss = ctx.runner.train_step(batch)
        ctx.runner.sync()
        dt = time.perf_counter() - t0
        st.train_time += dt
        st.step += 1
        if st.first_step_s is None:
            st.first_step_s = dt
        if st.step > WARMUP_STEPS:
            st.steady_time += dt
            st.steady_tokens += batch.num_tokens
            st.steady_captions += len(batch.lengths)
        if not math.isfinite(loss):
            return None
        ctx.scalars.add("train/loss", loss, st.step)
        losses.append(loss)
        st.tokens += batch.num_tokens
        if st.step >= budget.steps or st.train_time >= budget.time_s:
            break
    return losses


def _validate(ctx: Context, st: LoopState, losses: list, val_table) -> dict | None:
    """The epoch's history row (val loss and greedy val BLEU-4), None if the val loss is not finite;
    records when the target is reached."""
    from benchmarks.scoring.metrics import coco_scores
    from benchmarks.settings import target_met
    from shared_data.batches import iterate_batches

    ds, s = ctx.ds, ctx.settings
    t_val = time.perf_counter()
    val_loss = ctx.runner.eval_loss(iterate_batches(ds, "val", ctx.feats, s.batch_size, 0, 0, shuffle=False,
                                                    table=val_table, pad_to_max=ctx.backend.Runner.FIXED_SHAPES))
    if not math.isfinite(val_loss):  # finite training losses can still leave weights whose outputs overflow
        print(f"diverged: non-finite validation loss after epoch {st.epoch}", flush=True)
        return None
    hyps, refs, _, _ = decode_split(ctx.runner, ds, "val", ctx.feats, ds.max_length)
    val_bleu4 = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
    st.val_eval_s += time.perf_counter() - t_val
    row = {"epoch": st.epoch, "step": st.step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
           "val_loss": val_loss, "val_bleu4": val_bleu4, "train_time_s": st.train_time}
    st.history.append(row)
    for tag, value in (("val/loss", val_loss), ("val/BLEU-4", val_bleu4)):
        ctx.scalars.add(tag, value, st.step)
    if st.steady_time:
        ctx.scalars.add("train/tokens_per_s", st.steady_tokens / st.steady_time, st.step)
    if s.target is not None and target_met(s.target, val_bleu4, val_loss):
        # the training time up to the end of this epoch's training: its evaluation is off the clock
        st.reached = {"train_time_s": st.train_time, "epochs": st.epoch, "steps": st.step, "tokens": st.tokens}
        print(f"target {s.target} reached after epoch {st.epoch} ({st.train_time:.1f}s of training)", flush=True)
    return row


def _keep_best(ctx: Context, st: LoopState, row: dict, budget: Budget) -> None:
    """The best epoch's weights on disk, patience counted down, then the checkpoint."""
    from benchmarks.store import rundir

    run_dir = ctx.run_dir
    if row["val_bleu4"] > st.best_bleu4:
        # the best epoch's weights go to disk at once, named by epoch, so that the checkpoint written
        # next always points at the file of its own best epoch, whenever the process is killed
        st.best_bleu4, st.best_epoch = row["val_bleu4"], st.epoch
        st.best_file = Path(ctx.runner.save(run_dir / f"{rundir.EPOCH_WEIGHTS}{st.epoch}")).name
        st.patience_left = budget.patience
    else:
        st.patience_left -= 1
    rundir.write_checkpoint(ctx.runner, run_dir, ctx.cfg.get("config_hash"), st)
    for old in run_dir.glob(f"{rundir.EPOCH_WEIGHTS}*"):  # earlier bests, no longer pointed at
        if old.name != st.best_file:
            old.unlink(missing_ok=True)
    ctx.scalars.flush()
