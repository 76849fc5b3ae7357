"""Timing one plugin in a process of its own: training steps (also interleaved between twins),
decoding, and the child entry point whose last line is its JSON result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.perf.flops import (
    measure_matmul,
    merge_flops_per_token,
    pad_free,
    twin_flops,
)
from benchmarks.perf.shapes import FLICKR8K, _cycle, flickr8k_batches


def time_training(runner, batches, steps: int, warmup: int) -> dict:
    """Steady-state rate: the mean over `steps` device-synchronised steps after `warmup` ones."""
    t_first, tokens, seconds = None, 0, 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)  # inside the timed region, as in the worker: reading features is training's input
        runner.train_step(batch)
        runner.sync()
        dt = time.perf_counter() - t0
        t_first = dt if t_first is None else t_first
        if i >= warmup:
            seconds += dt
            tokens += batch.num_tokens
    return {"tokens_per_s": tokens / seconds, "steps_per_s": steps / seconds, "first_step_s": t_first,
            "tokens_per_step": tokens / steps}


def time_interleaved(runner, batches: dict, steps: int, warmup: int, rounds: int = 4) -> dict:
    """Several input pipelines timed in alternating rounds on the same model, so that warm-up, the
    machine's drift and the order of measurement fall on each alike: {name: time_training's dict}."""
    totals = {name: {"tokens": 0.0, "seconds": 0.0, "steps": 0} for name in batches}
    for it in batches.values():
        time_training(runner, it, 1, warmup)  # each pipeline's own warm-up (its first batches, its thread)
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name, it in batches.items():
            r = time_training(runner, it, per_round, 0)
            t = totals[name]
            t["tokens"] += r["tokens_per_step"] * per_round
            t["seconds"] += per_round / r["steps_per_s"]
            t["steps"] += per_round
    return {name: {"tokens_per_s": t["tokens"] / t["seconds"], "steps_per_s": t["steps"] / t["seconds"],
                   "first_step_s": None, "tokens_per_step": t["tokens"] / t["steps"], "rounds": rounds}
            for name, t in totals.items()}


def time_decoding(runner, global_feats, spatial_feats, max_len: int, beam: int, alpha: float) -> dict:
    """Batched beam search against a loop of batch-1 searches on the same images."""
    def strip(row):
        return [int(t) for t in row if t != runner.spec.pad_id]

    n = len(global_feats)
    t0 = time.perf_counter()
    batched = runner.beam(global_feats, spatial_feats, max_len, beam, alpha)
    runner.sync()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [runner.beam(global_feats[i:i + 1], None if spatial_feats is None else spatial_feats[i:i + 1],
                          max_len, beam, alpha)[0] for i in range(n)]
    runner.sync()
    t_single = time.perf_counter() - t0
    differ = sum(strip(a) != strip(b) for a, b in zip(batched, single, strict=True))
    return {"beam": beam, "images": n, "batched_captions_per_s": n / t_batched,
            "per_image_captions_per_s": n / t_single, "captions_differ": differ}


@dataclass
class Inputs:
    """What one plugin is timed on: its model spec and batch size, and endless iterators of batches."""
    spec: object
    batch_size: int
    sequence: Iterator
    prefix: Iterator | None
    epoch_batches: dict
    lengths: np.ndarray
    in_memory: Iterator | None = None  # features loaded into memory, for `--features both`
    ds: object = None
    feats: object = None


def _flickr8k_inputs(plugin, backend, seed: int) -> Inputs:
    from plugins.registry import ModelSpec
    from shared_data.batches import num_batches

    f = FLICKR8K
    spec = ModelSpec(f["vocab_size"], f["global_dim"], f["spatial_shape"] if plugin.needs_spatial else None,
                     f["max_length"])
    bs = f["batch_size"]
    pool = flickr8k_batches(spec, bs, backend.FIXED_SHAPES, seed)
    # prefix: the expansion at these shapes costs minutes a step on a CPU: measured on the dataset
    return Inputs(spec, bs, _cycle(lambda _: pool), None, {"sequence": num_batches(f["train_captions"], bs)},
                  np.concatenate([b.lengths for b in pool]))


def _dataset_inputs(job: dict, plugin, backend, bs: int, seed: int) -> Inputs:
    from plugins.registry import ModelSpec
    from shared_data.batches import CaptionTable, iterate_batches, iterate_prefix_batches, num_batches
    from shared_data.dataset import load_dataset

    ds = load_dataset(job["dataset"], Path(job["data_dir"]) if job.get("data_dir") else None, verify=False)
    feats = ds.features(job["extractor"], spatial=plugin.needs_spatial, global_=plugin.needs_global)
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    fixed = backend.FIXED_SHAPES

    def sequences(source):
        return _cycle(lambda e: iterate_batches(ds, "train", source, bs, seed, e, table=table, pad_to_max=fixed))

    both = job.get("features") == "both"  # the same batches from features loaded into memory, side by side
    # `both` compares input pipelines; the prefix expansion of a large grid would not fit beside it
    prefix = None if both else _cycle(lambda e: iterate_prefix_batches(
        ds, "train", feats, bs, seed, e, padding=backend.Runner.PREFIX_PADDING, pad_to_max=fixed, table=table))
    epoch_batches = {"sequence": num_batches(len(table), bs),
                     "prefix": -(-len(table.per_image) // table.images_per_batch(bs))}
    return Inputs(ModelSpec.of(ds, feats), bs, sequences(feats), prefix, epoch_batches, table.lengths,
                  sequences(feats.in_memory()) if both else None, ds, feats)


def _flops(plugin, spec, hp: dict, runner, inputs: Inputs, tokens_per_caption: float) -> tuple[float | None, str]:
    """Training FLOPs per token and where the figure comes from."""
    if plugin.family == "merge":
        return merge_flops_per_token(spec, hp, tokens_per_caption), "formula"
    if runner.FLOP_COUNTER:
        return runner.count_flops(runner.model, pad_free(next(inputs.sequence))), runner.FLOP_COUNTER
    return None, "n/a"  # perf counts the torch twin of the same architecture (the parity tests show they match)


def run_plugin(job: dict) -> dict:
    from plugins.registry import PluginRef

    ref = PluginRef.parse(job["plugin"])
    if ref.keras_backend:
        os.environ["KERAS_BACKEND"] = ref.keras_backend  # before keras is first imported
    import backends
    from backends.common import Execution, OptimConfig

    plugin = ref.plugin
    backend = backends.load(plugin.framework)
    seed = job["seed"]
    inputs = (_flickr8k_inputs(plugin, backend, seed) if job["shapes"] == "flickr8k"
              else _dataset_inputs(job, plugin, backend, job["batch_size"], seed))
    spec = inputs.spec
    out = {"plugin": job["plugin"], "framework": plugin.framework, "family": plugin.family,
           "shapes": job["shapes"], "vocab_size": spec.vocab_size, "global_dim": spec.global_dim,
           "batch_size": inputs.batch_size, "epoch_batches": inputs.epoch_batches,
           "tokens_per_caption": float(np.mean(inputs.lengths - 1))}
    execution = Execution(job.get("precision", "fp32"), job.get("compile", False))
    runner = backend.Runner(plugin, spec, {}, seed, OptimConfig(), execution)
    out["device"], out["execution"], out["versions"] = runner.device_name(), execution.to_json(), runner.versions()
    out["flops_per_token"], out["flops_source"] = _flops(plugin, spec, dict(plugin.defaults), runner, inputs,
                                                         out["tokens_per_caption"])
    steps, warmup = job["steps"], job["warmup"]
    if inputs.in_memory is not None and job["shapes"] == "dataset":
        both = time_interleaved(runner, {"disk": inputs.sequence, "memory": inputs.in_memory}, steps, warmup)
        out["training"] = {"sequence": both["disk"]}
        out["features_in_memory"] = both["memory"]
    else:
        out["training"] = {"sequence": time_training(runner, inputs.sequence, steps, warmup)}
    if inputs.prefix is not None:
        out["training"]["prefix"] = time_training(runner, inputs.prefix, steps, warmup)
    out["decoding"] = []
    if job["shapes"] == "dataset" and job["images"]:
        ds, feats = inputs.ds, inputs.feats
        rows = ds.splits["test"].feature_rows[:job["images"]]
        g = feats.global_[rows]
        s = None if feats.spatial is None else feats.spatial[rows]
        for beam in job["beams"]:
            out["decoding"].append(time_decoding(runner, g, s, ds.max_length, beam, job["alpha"]))
    return out


def child_main(job: dict) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kinds = {"matmul": lambda j: measure_matmul(j["matmul_n"]), "plugin": run_plugin, "twin_flops": twin_flops}
    result = kinds[job["kind"]](job)
    print(RESULT + json.dumps(result), flush=True)
    return 0


def run_child(job: dict) -> dict:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.measure", "--one", json.dumps(job)], cwd=root,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        return {"error": f"{job.get('plugin', job['kind'])} ({job.get('shapes', '')}) exited {proc.returncode}",
                "log_tail": tail}
    return json.loads(lines[-1][len(RESULT):])


RESULT = "@perf-result "  # the child's last stdout line: its JSON result
