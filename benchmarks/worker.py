"""One run, in its own process: `python -m benchmarks.worker RUN_DIR` (RUN_DIR/config.json given).

Own process, so that TensorFlow and PyTorch never share one, timings and peak memory belong to one
model, and a crash is one failed row. The protocol is the same for every plugin: the same batches
from shared_data's iterator, the same budget, the same evaluation schedule (loss and decoded BLEU-4
on val after every epoch, best epoch by val BLEU-4, then test decoding and metrics).
Writes metrics.json last (atomically): a run folder without it did not finish.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

WARMUP_STEPS = 5  # excluded from throughput: graph building, allocator warm-up, caches
PROGRESS = "@progress "  # lines the study turns into a progress bar instead of logging them
ATTENTION_IMAGES = 4  # test images whose attention maps are saved (plugins with attention_step)


class _Progress:
    """At most a few lines a second on stdout: `@progress {"phase", "done", "total"}`."""

    def __init__(self, phase: str, total: int):
        self.phase, self.total, self.last = phase, total, 0.0

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last > 0.25:
            self.last = now
            print(PROGRESS + json.dumps({"phase": self.phase, "done": done, "total": self.total}), flush=True)


def _decode_split(runner, ds, split: str, feats, max_len: int, limit: int | None = None,
                  permutation: np.ndarray | None = None, batch: int = 500, beam: int = 1,
                  alpha: float = 0.0, phase: str | None = None) -> tuple[dict, dict, float]:
    """Greedy (beam 1) or beam-search captions for a split's images: (hypotheses, references, captions/s)."""
    sp = ds.splits[split]
    rows = sp.feature_rows[:limit] if limit else sp.feature_rows
    src = rows[permutation] if permutation is not None else rows  # shuffled-feature control
    ids = sp.image_ids[: len(rows)]
    hyps: dict[str, str] = {}
    progress = _Progress(phase or f"decode {split}", len(rows))
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch):
        progress(start)
        r = src[start:start + batch]
        g = feats.global_[r]
        s = None if feats.spatial is None else feats.spatial[r]
        out = runner.greedy(g, s, max_len) if beam == 1 else runner.beam(g, s, max_len, beam, alpha)
        for i, seq in zip(ids[start:start + batch], out, strict=True):
            hyps[i] = " ".join(ds.vocab.decode(seq))
    runner.sync()
    rate = len(rows) / (time.perf_counter() - t0)
    refs = {i: [" ".join(c) for c in caps] for i, caps in zip(ids, sp.captions, strict=False)}
    return hyps, refs, rate


class Diverged(Exception):
    """A NaN/inf loss before any epoch could be evaluated: a row marked diverged, not a crash."""


DIVERGED_EXIT = 3


def _save_attention(runner, ds, feats, run_dir: Path) -> None:
    """attention.npz: the first test images' greedy captions and each word's attention over positions."""
    sp = ds.splits["test"]
    rows = sp.feature_rows[:ATTENTION_IMAGES]
    tokens, alphas = runner.greedy_attention(feats.global_[rows], feats.spatial[rows], ds.max_length)
    np.savez_compressed(run_dir / "attention.npz", image_ids=np.array(sp.image_ids[:ATTENTION_IMAGES]),
                        tokens=tokens, alphas=alphas.astype(np.float32),
                        words=np.array([ds.vocab.itos[t] for t in tokens.ravel()]).reshape(tokens.shape))


def run(run_dir: Path) -> dict:
    t_start = time.perf_counter()
    cfg = json.loads((run_dir / "config.json").read_text())
    plugin_name, _, keras_backend = cfg["plugin"].partition("@")
    if keras_backend:
        os.environ["KERAS_BACKEND"] = keras_backend  # before keras is first imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import importlib

    from backends.common import OptimConfig
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import CaptionTable, iterate_batches, iterate_prefix_batches, num_batches
    from shared_data.dataset import load_dataset, write_json_atomic
    from shared_data.errors import UserError

    from .grounding import grounded_scores
    from .metrics import coco_scores, nltk_bleu4, spice_missing

    ds = load_dataset(cfg["dataset"], Path(cfg["data_dir"]) if cfg.get("data_dir") else None,
                      verify=cfg.get("verify", True))
    feats = ds.features(cfg["extractor"])
    plugin = get_plugin(plugin_name)
    if plugin.needs_spatial and feats.spatial is None:
        raise UserError(f"{plugin_name} needs spatial features, and '{cfg['extractor']}' has none; "
                        "use an extractor with a grid (grid, resnet101, regnetx400mf)")
    spec = ModelSpec.of(ds, feats)
    backend = importlib.import_module(f"backends.{plugin.framework}.runner")
    optim = OptimConfig(**cfg["optim"])
    t_build = time.perf_counter()
    runner = backend.Runner(plugin, spec, cfg["hparams"], cfg["seed"], optim)
    build_s = time.perf_counter() - t_build
    params = runner.parameters()

    budget = cfg["budget"]
    bs = cfg["batch_size"]
    train_table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    val_table = CaptionTable(ds.splits["val"], ds.vocab, ds.max_length)
    training = cfg.get("training", "sequence")
    if training == "prefix":
        # the Keras recipe pre-pads (its models mask, so leading pads are skipped); PyTorch models
        # do not mask, and leading pads would run through the recurrence: post-pad there
        padding = "pre" if plugin.framework == "keras" else "post"

        def train_batches(epoch):
            return iterate_prefix_batches(ds, "train", feats, bs, cfg["seed"], epoch, padding=padding,
                                          pad_to_max=backend.FIXED_SHAPES, table=train_table)
    else:
        def train_batches(epoch):
            return iterate_batches(ds, "train", feats, bs, cfg["seed"], epoch, table=train_table,
                                   pad_to_max=backend.FIXED_SHAPES)
    steps_per_epoch = sum(1 for _ in train_batches(0)) if training == "prefix" else num_batches(len(train_table), bs)
    max_epochs = budget.get("epochs") or math.inf
    max_steps = budget.get("steps") or math.inf
    time_budget = budget.get("time_budget") or math.inf
    if max_epochs == math.inf and max_steps == math.inf and time_budget == math.inf:
        raise UserError("no budget: give --epochs, --steps or --time-budget")

    history, step, train_time, first_step_s, val_eval_s = [], 0, 0.0, None, 0.0
    steady_tokens = steady_captions = 0
    steady_time = 0.0
    best = {"bleu4": -1.0, "epoch": 0, "weights": None}
    status, patience_left = "ok", cfg.get("patience") or math.inf
    epoch = 0
    while epoch < max_epochs and step < max_steps and train_time < time_budget:
        losses, tokens_seen = [], 0
        progress = _Progress(f"train epoch {epoch + 1}", steps_per_epoch)
        for i, batch in enumerate(train_batches(epoch)):
            progress(i)
            t0 = time.perf_counter()
            loss = runner.train_step(batch)
            runner.sync()
            dt = time.perf_counter() - t0
            train_time += dt
            step += 1
            if first_step_s is None:
                first_step_s = dt
            if step > WARMUP_STEPS:
                steady_time += dt
                steady_tokens += batch.num_tokens
                steady_captions += len(batch.lengths)
            if not math.isfinite(loss):
                status = "diverged"
                break
            losses.append(loss)
            tokens_seen += batch.num_tokens
            if step >= max_steps or train_time >= time_budget:
                break
        if status == "diverged":
            break
        epoch += 1
        t_val = time.perf_counter()
        val_loss = runner.eval_loss(iterate_batches(ds, "val", feats, bs, 0, 0, shuffle=False, table=val_table,
                                                    pad_to_max=backend.FIXED_SHAPES))
        hyps, refs, _ = _decode_split(runner, ds, "val", feats, ds.max_length)
        val_bleu4 = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
        val_eval_s += time.perf_counter() - t_val
        row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_bleu4": val_bleu4, "train_time_s": train_time}
        history.append(row)
        print(json.dumps(row), flush=True)
        if val_bleu4 > best["bleu4"]:
            best = {"bleu4": val_bleu4, "epoch": epoch, "weights": runner.state_dict()}
            patience_left = cfg.get("patience") or math.inf
        else:
            patience_left -= 1
            if patience_left <= 0:
                print(f"early stop after epoch {epoch}", flush=True)
                break

    with open(run_dir / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train_loss", "val_loss", "val_bleu4", "train_time_s"])
        w.writeheader()
        w.writerows(history)
    if status == "diverged" and best["weights"] is None:
        raise Diverged(f"diverged: non-finite training loss at step {step}, before any epoch finished "
                       f"(lower --lr or --clip-norm)")
    if best["weights"] is not None:
        runner.load_state_dict(best["weights"])
    weights_file = runner.save(run_dir / "weights")

    t_eval = time.perf_counter()
    hyps, refs, greedy_rate = _decode_split(runner, ds, "test", feats, ds.max_length)
    quality, per_image = coco_scores(refs, hyps, meteor=cfg.get("meteor", True), spice=True)
    quality["nltk_BLEU-4"] = nltk_bleu4(refs, hyps)
    beam_size, alpha = cfg.get("beam_size", 3), cfg.get("length_alpha", 0.6)
    beam_hyps, _, beam_rate = _decode_split(runner, ds, "test", feats, ds.max_length, beam=beam_size, alpha=alpha,
                                              phase=f"decode test (beam {beam_size})")
    beam_quality, _ = coco_scores(refs, beam_hyps, meteor=False)
    perm = np.random.default_rng(cfg["seed"]).permutation(len(ds.splits["test"].image_ids))
    sh_hyps, _, _ = _decode_split(runner, ds, "test", feats, ds.max_length, permutation=perm,
                                   phase="decode test (shuffled features)")
    shuffled, _ = coco_scores(refs, sh_hyps, meteor=False)
    n_train_eval = min(1000, len(ds.splits["train"].image_ids))
    tr_hyps, tr_refs, _ = _decode_split(runner, ds, "train", feats, ds.max_length, limit=n_train_eval)
    train_bleu4 = coco_scores(tr_refs, tr_hyps, meteor=False)[0]["BLEU-4"]
    if feats.spatial is not None and runner.has_attention():
        _save_attention(runner, ds, feats, run_dir)
    objects = ds.objects()
    grounding = grounded_scores(hyps, objects) if objects else None
    eval_s = time.perf_counter() - t_eval

    peak, peak_kind = runner.peak_memory()
    metrics = {
        "status": status,
        "plugin": cfg["plugin"], "framework": plugin.framework, "family": plugin.family,
        "device": runner.device_name(), "versions": runner.versions(),
        "quality": quality,
        "spice_note": spice_missing(),
        "shuffled_control": {"BLEU-4": shuffled["BLEU-4"], "CIDEr": shuffled["CIDEr"]},
        "beam": {"size": beam_size, "length_alpha": alpha, "BLEU-4": beam_quality["BLEU-4"],
                 "CIDEr": beam_quality["CIDEr"]},
        "grounding": grounding,
        "params": params,
        "weights_file": Path(weights_file).name, "weights_bytes": Path(weights_file).stat().st_size,
        "speed": {
            "train_tokens_per_s": steady_tokens / steady_time if steady_time else float("nan"),
            "train_captions_per_s": steady_captions / steady_time if steady_time else float("nan"),
            "time_to_first_step_s": first_step_s, "build_s": build_s,
            "decode_greedy_captions_per_s": greedy_rate, "decode_beam_captions_per_s": beam_rate,
            "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
            "fixed_shapes": backend.FIXED_SHAPES,
        },
        "training": {"epochs": epoch, "steps": step, "steps_per_epoch": steps_per_epoch,
                     "train_time_s": train_time, "eval_time_s": eval_s, "val_eval_time_s": val_eval_s,
                     # in-process time outside training and evaluation: data loading, model building, saving
                     # (interpreter start and framework imports happen before and are not counted here)
                     "other_time_s": time.perf_counter() - t_start - train_time - eval_s - val_eval_s},
        "overfitting": {
            "best_epoch": best["epoch"],
            "final_train_loss": history[-1]["train_loss"] if history else None,
            "final_val_loss": history[-1]["val_loss"] if history else None,
            "train_bleu4": train_bleu4, "test_bleu4": quality["BLEU-4"],
        },
    }
    write_json_atomic(run_dir / "captions.json", {i: {"generated": hyps[i], "references": refs[i]} for i in hyps})
    write_json_atomic(run_dir / "per_image.json", per_image)
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def main() -> int:
    run_dir = Path(sys.argv[1])
    from shared_data.errors import UserError

    try:
        run(run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except Exception:  # a crash is one failed row: its traceback goes to the run's log
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
