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
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
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
    t_start, started_at = time.perf_counter(), time.time()
    cfg = json.loads((run_dir / "config.json").read_text())
    plugin_name, _, keras_backend = cfg["plugin"].partition("@")
    if keras_backend:
        os.environ["KERAS_BACKEND"] = keras_backend  # before keras is first imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import importlib

    from backends.common import Execution, OptimConfig
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import CaptionTable, iterate_batches, iterate_prefix_batches, num_batches
    from shared_data.dataset import load_dataset, write_json_atomic
    from shared_data.errors import UserError

    from .grounding import grounded_scores
    from .metrics import coco_scores, nltk_bleu4, spice_missing, start_meteor
    from .scalars import open_scalars

    ds = load_dataset(cfg.get("dataset_path") or cfg["dataset"], Path(cfg["data_dir"]) if cfg.get("data_dir") else None,
                      verify=cfg.get("verify", True))
    plugin = get_plugin(plugin_name)
    # a plugin that reads the pooled vector only gets no grid: its batches would gather it for nothing
    feats = ds.features(cfg["extractor"], spatial=plugin.needs_spatial)
    if plugin.needs_spatial and feats.spatial is None:
        raise UserError(f"{plugin_name} needs spatial features, and '{cfg['extractor']}' has none; "
                        "use an extractor with a grid (grid, resnet101, regnetx400mf)")
    spec = ModelSpec.of(ds, feats)
    t_import = time.perf_counter()
    backend = importlib.import_module(f"backends.{plugin.framework}.runner")  # the framework's import
    import_s = time.perf_counter() - t_import
    if cfg.get("threads"):  # set by the study when runs share the machine
        backend.set_threads(int(cfg["threads"]))
    optim = OptimConfig(**cfg["optim"])
    execution = Execution(**cfg.get("execution", {}))
    t_build = time.perf_counter()
    runner = backend.Runner(plugin, spec, cfg["hparams"], cfg["seed"], optim, execution)
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

    st = LoopState(patience_left=cfg.get("patience") or math.inf)
    ckpt = read_checkpoint(run_dir, cfg.get("config_hash"))
    if ckpt is not None:
        runner.load_checkpoint(run_dir / ckpt["file"])
        st = LoopState(**ckpt["loop"])
        print(f"resumed from the checkpoint after epoch {st.epoch} (step {st.step})", flush=True)
    resumed = LoopState(**asdict(st))  # the earlier attempts' share, kept out of this process's time split
    status = "ok"
    scalars = open_scalars(run_dir, cfg.get("tensorboard", False), resume_step=st.step if ckpt else None)
    # patience_left is part of the state: a run killed after its early-stop epoch does not train on
    while st.patience_left > 0 and st.epoch < max_epochs and st.step < max_steps and st.train_time < time_budget:
        losses, tokens_seen = [], 0
        progress = _Progress(f"train epoch {st.epoch + 1}", steps_per_epoch)
        for i, batch in enumerate(train_batches(st.epoch)):
            progress(i)
            t0 = time.perf_counter()
            loss = runner.train_step(batch)
            runner.sync()
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
                status = "diverged"
                break
            scalars.add("train/loss", loss, st.step)
            losses.append(loss)
            tokens_seen += batch.num_tokens
            if st.step >= max_steps or st.train_time >= time_budget:
                break
        if status == "diverged":
            break
        st.epoch += 1
        t_val = time.perf_counter()
        val_loss = runner.eval_loss(iterate_batches(ds, "val", feats, bs, 0, 0, shuffle=False, table=val_table,
                                                    pad_to_max=backend.FIXED_SHAPES))
        hyps, refs, _ = _decode_split(runner, ds, "val", feats, ds.max_length)
        val_bleu4 = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
        st.val_eval_s += time.perf_counter() - t_val
        row = {"epoch": st.epoch, "step": st.step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_bleu4": val_bleu4, "train_time_s": st.train_time}
        st.history.append(row)
        for tag, value in (("val/loss", val_loss), ("val/BLEU-4", val_bleu4)):
            scalars.add(tag, value, st.step)
        if st.steady_time:
            scalars.add("train/tokens_per_s", st.steady_tokens / st.steady_time, st.step)
        if val_bleu4 > st.best_bleu4:
            # the best epoch's weights go to disk at once, named by epoch, so that the checkpoint written
            # next always points at the file of its own best epoch, whenever the process is killed
            st.best_bleu4, st.best_epoch = val_bleu4, st.epoch
            st.best_file = Path(runner.save(run_dir / f"weights-epoch{st.epoch}")).name
            st.patience_left = cfg.get("patience") or math.inf
        else:
            st.patience_left -= 1
        write_checkpoint(runner, run_dir, cfg.get("config_hash"), st)
        for old in run_dir.glob("weights-epoch*"):  # earlier bests, no longer pointed at
            if old.name != st.best_file:
                old.unlink(missing_ok=True)
        scalars.flush()
        print(json.dumps(row), flush=True)
        if st.patience_left <= 0:
            print(f"early stop after epoch {st.epoch}", flush=True)

    with open(run_dir / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train_loss", "val_loss", "val_bleu4", "train_time_s"])
        w.writeheader()
        w.writerows(st.history)
    if status == "diverged" and st.best_file is None:
        scalars.close()
        raise Diverged(f"diverged: non-finite training loss at step {st.step}, before any epoch finished "
                       f"(lower --lr or --clip-norm)")
    if st.best_epoch != st.epoch or status == "diverged":
        runner.load_file(run_dir / st.best_file)
    weights_file = run_dir / ("weights" + Path(st.best_file).suffix)  # the run's weights: its best epoch's
    shutil.copyfile(run_dir / st.best_file, weights_file)  # a copy: the checkpoint still points at the original

    t_eval = time.perf_counter()
    hyps, refs, greedy_rate = _decode_split(runner, ds, "test", feats, ds.max_length)
    beam_size, alpha = cfg.get("beam_size", 3), cfg.get("length_alpha", 0.6)
    beam_hyps, _, beam_rate = _decode_split(runner, ds, "test", feats, ds.max_length, beam=beam_size, alpha=alpha,
                                              phase=f"decode test (beam {beam_size})")
    # no speed figure is measured after this point: METEOR's JVM loads its tables (~5 s) meanwhile
    meteor = start_meteor() if cfg.get("meteor", True) else False
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
    quality, per_image = coco_scores(refs, hyps, meteor=meteor, spice=True)
    quality["nltk_BLEU-4"] = nltk_bleu4(refs, hyps)
    eval_s = time.perf_counter() - t_eval

    peak, peak_kind = runner.peak_memory()
    metrics = {
        "status": status,
        "plugin": cfg["plugin"], "framework": plugin.framework, "family": plugin.family,
        "device": runner.device_name(), "versions": runner.versions(), "execution": execution.to_json(),
        "quality": quality,
        "spice_note": spice_missing(),
        "shuffled_control": {"BLEU-4": shuffled["BLEU-4"], "CIDEr": shuffled["CIDEr"]},
        "beam": {"size": beam_size, "length_alpha": alpha, "BLEU-4": beam_quality["BLEU-4"],
                 "CIDEr": beam_quality["CIDEr"]},
        "grounding": grounding,
        "params": params,
        "weights_file": Path(weights_file).name, "weights_bytes": Path(weights_file).stat().st_size,
        "speed": {
            "train_tokens_per_s": st.steady_tokens / st.steady_time if st.steady_time else float("nan"),
            "train_captions_per_s": st.steady_captions / st.steady_time if st.steady_time else float("nan"),
            "time_to_first_step_s": st.first_step_s, "build_s": build_s, "framework_import_s": import_s,
            "decode_greedy_captions_per_s": greedy_rate, "decode_beam_captions_per_s": beam_rate,
            "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
            "fixed_shapes": backend.FIXED_SHAPES, "threads": cfg.get("threads"),
            "started_at": started_at, "finished_at": time.time(),
        },
        "training": {"epochs": st.epoch, "steps": st.step, "steps_per_epoch": steps_per_epoch,
                     "train_time_s": st.train_time, "eval_time_s": eval_s, "val_eval_time_s": st.val_eval_s,
                     # in-process time outside training and evaluation: the framework's import, data
                     # loading, model building, checkpoints and saving (interpreter start is not counted)
                     "other_time_s": time.perf_counter() - t_start - (st.train_time - resumed.train_time)
                     - eval_s - (st.val_eval_s - resumed.val_eval_s),
                     "resumed_after_epoch": resumed.epoch if ckpt is not None else None},
        "overfitting": {
            "best_epoch": st.best_epoch,
            "final_train_loss": st.history[-1]["train_loss"] if st.history else None,
            "final_val_loss": st.history[-1]["val_loss"] if st.history else None,
            "train_bleu4": train_bleu4, "test_bleu4": quality["BLEU-4"],
        },
    }
    for tag, value in (("test/BLEU-4", quality["BLEU-4"]), ("test/CIDEr", quality["CIDEr"])):
        scalars.add(tag, value, st.step)
    scalars.close()
    write_json_atomic(run_dir / "captions.json", {i: {"generated": hyps[i], "references": refs[i]} for i in hyps})
    write_json_atomic(run_dir / "per_image.json", per_image)
    write_json_atomic(run_dir / "metrics.json", metrics)
    remove_checkpoint(run_dir)  # finished: metrics.json is the record now
    return metrics


CHECKPOINT = "checkpoint"  # RUN_DIR/checkpoint.json (loop state) + checkpoint.{pt,npz} (model, optimizer)


def write_checkpoint(runner, run_dir: Path, config_hash: str | None, st: LoopState) -> None:
    """After every epoch: the runner's state first, then the json that points at it, each atomically,
    so a kill at any moment leaves the previous epoch's checkpoint or this one, never half of one."""
    from shared_data.dataset import write_json_atomic

    file = Path(runner.save_checkpoint(run_dir / CHECKPOINT)).name
    write_json_atomic(run_dir / f"{CHECKPOINT}.json", {"config_hash": config_hash, "file": file, "loop": asdict(st)})


def read_checkpoint(run_dir: Path, config_hash: str | None) -> dict | None:
    """The last epoch's checkpoint of this very configuration, or None (none, or another config's)."""
    try:
        ckpt = json.loads((run_dir / f"{CHECKPOINT}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if ckpt.get("config_hash") != config_hash or not (run_dir / ckpt["file"]).exists():
        return None
    return ckpt


def remove_checkpoint(run_dir: Path) -> None:
    for f in [*run_dir.glob(f"{CHECKPOINT}.*"), *run_dir.glob("weights-epoch*")]:
        f.unlink(missing_ok=True)


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
    code = main()
    # every file is written and closed by now (metrics.json last; METEOR's JVM was stopped when its
    # scorer was freed): skip the interpreter's teardown, which takes 0.7-0.9 s with TensorFlow or
    # PyTorch loaded, about 1% of a default run for its two runs
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
