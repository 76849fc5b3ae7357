"""metrics.json and the caption files: what a finished run leaves for the report."""
from __future__ import annotations

import time

from backends.decoding import Decoder
from benchmarks.machine import environment
from benchmarks.run.worker.context import Context
from benchmarks.run.worker.state import LoopState


def record(ctx: Context, st: LoopState, resumed: LoopState | None, status: str, steps_per_epoch: int,
           ev: dict, t_start: float, started_at: float) -> dict:
    """metrics.json and the caption files, metrics.json last: the run is finished once it exists."""
    from benchmarks.scoring.metrics import spice_missing
    from benchmarks.store import rundir

    runner, s, q = ctx.runner, ctx.settings, ev["quality"]
    metrics = {
        "status": status,
        "plugin": ctx.cfg["plugin"], "framework": ctx.plugin.framework, "family": ctx.plugin.family,
        "device": runner.device_name(), "versions": runner.versions(), "execution": s.execution().to_json(),
        "environment": environment(),
        # where this machine found the dataset (a cluster node may have its own copy) and how features
        # came in: read from disk by batch, the arrays the model reads and the dtype each is stored as
        "data": {"path": str(ctx.ds.path), "features": "read from disk by batch",
                 "stored_dtype": ctx.feats.read_from_file(),
                 # the features' bytes on this machine and the weights that made them (both in the report)
                 "features_sha256": ctx.ds.manifest["files"].get(f"features/{ctx.cfg['extractor']}.h5"),
                 "weights_sha256": ctx.ds.manifest["features"][ctx.cfg["extractor"]].get("weights_sha256")},
        "quality": q,
        "quality_4refs": ev["quality_4refs"],  # against references 2-5 only, as the human ceiling is scored
        "spice_note": spice_missing(),
        "shuffled_control": {"BLEU-4": ev["shuffled"]["BLEU-4"], "CIDEr": ev["shuffled"]["CIDEr"]},
        "beam": {"size": s.beam_size, "length_alpha": s.length_alpha, "BLEU-4": ev["beam_quality"]["BLEU-4"],
                 "CIDEr": ev["beam_quality"]["CIDEr"]},
        "grounding": ev["grounding"],
        "decoding": {"method": ev["decoding"], "captions_per_image": Decoder.of(s).n},
        "target": None if s.target is None else {"target": s.target, "reached": st.reached is not None,
                                                 **(st.reached or {})},
        "params": runner.parameters(),
        "weights_file": ev["weights_file"].name, "weights_bytes": ev["weights_file"].stat().st_size,
        "speed": _speed(ctx, st, ev, started_at),
        "training": _training(ctx, st, resumed, steps_per_epoch, ev, t_start),
        "overfitting": {
            "best_epoch": st.best_epoch,
            "final_train_loss": st.history[-1]["train_loss"] if st.history else None,
            "final_val_loss": st.history[-1]["val_loss"] if st.history else None,
            "train_bleu4": ev["train_bleu4"], "test_bleu4": q["BLEU-4"],
        },
    }
    for tag, value in (("test/BLEU-4", q["BLEU-4"]), ("test/CIDEr", q["CIDEr"])):
        ctx.scalars.add(tag, value, st.step)
    ctx.scalars.close()
    every = ev["every"]  # several captions per image: all of them, for mBLEU-4
    rundir.write_json(ctx.run_dir / rundir.CAPTIONS,
                      {i: {"generated": ev["hyps"][i], "references": ev["refs"][i],
                           **({"all": every[i]} if every else {})} for i in ev["hyps"]})
    rundir.write_json(ctx.run_dir / rundir.PER_IMAGE, ev["per_image"])
    rundir.write_json(ctx.run_dir / rundir.METRICS, metrics)
    rundir.remove_checkpoint(ctx.run_dir)  # finished: metrics.json is the record now
    return metrics


def _speed(ctx: Context, st: LoopState, ev: dict, started_at: float) -> dict:
    """Throughput in steady state (after the warm-up steps), set-up times, decoding rates, peak memory."""
    from backends import runner as contract

    peak, peak_kind = ctx.runner.peak_memory()
    return {
        "train_tokens_per_s": st.steady_tokens / st.steady_time if st.steady_time else float("nan"),
        "train_captions_per_s": st.steady_captions / st.steady_time if st.steady_time else float("nan"),
        "time_to_first_step_s": st.first_step_s, "build_s": ctx.build_s, "framework_import_s": ctx.import_s,
        "decode_greedy_captions_per_s": ev["greedy_rate"], "decode_beam_captions_per_s": ev["beam_rate"],
        "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
        # prefix batches are never cut by a backend (their pads come first): the harness's padding
        "fixed_shapes": ctx.backend.Runner.FIXED_SHAPES,
        "batch_width": (ctx.runner.batch_width() if ctx.settings.training == "sequence"
                        else contract.Runner.batch_width(ctx.runner)),
        "threads": ctx.cfg.get("threads"),
        "started_at": started_at, "finished_at": time.time(),
    }


def _training(ctx: Context, st: LoopState, resumed: LoopState | None, steps_per_epoch: int, ev: dict,
              t_start: float) -> dict:
    """Epochs, steps and where this process's time went (earlier attempts' shares excluded)."""
    before = resumed or LoopState()
    return {
        "epochs": st.epoch, "steps": st.step, "steps_per_epoch": steps_per_epoch,
        "train_time_s": st.train_time, "eval_time_s": ev["eval_s"], "val_eval_time_s": st.val_eval_s,
        # in-process time outside training and evaluation: the framework's import, data
        # loading, model building, checkpoints and saving (interpreter start is not counted)
        "other_time_s": time.perf_counter() - t_start - (st.train_time - before.train_time)
        - ev["eval_s"] - (st.val_eval_s - before.val_eval_s),
        "resumed_after_epoch": resumed.epoch if resumed is not None else None,
    }
