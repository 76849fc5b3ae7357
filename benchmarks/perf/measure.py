"""`python -m benchmarks perf`: how much faster than the recipes people copy, and how close to the machine.

Three measurements (issue 6), each plugin in its own child process (`python -m benchmarks.perf.measure --one JOB`)
so that TensorFlow and PyTorch never share one and every figure belongs to one model:

1. Training: whole-sequence teacher forcing against the Keras recipe's prefix expansion (one sample
   per caption prefix), same model, data and batch size in captions. Target tokens/s in steady state
   (after --warmup steps, each step device-synchronised), and time per epoch extrapolated from the
   step rate and the number of batches in an epoch.
2. Decoding: batched beam search (all images' beams in one forward per time step) against one image
   at a time (batch = beam, the Show, Attend and Tell tutorial's way), on the same images; the
   captions must be identical.
3. Hardware efficiency: useful training FLOP/s (target tokens/s x FLOPs per target token) as a share
   of the machine's measured fp32 matmul rate (the faster of torch's and numpy's: MFU), at the
   dataset's shapes and at Flickr8k's (V=8485, D=4096, 128 captions a batch, random captions of
   8-37 tokens). Padding and the prefix expansion's repeated work count as waste: the FLOPs are
   those a token needs, not those computed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from backends.common import TORCH_API, api_engine

RESULT = "@perf-result "  # the child's last stdout line: its JSON result
FLICKR8K = dict(vocab_size=8485, global_dim=4096, spatial_shape=(196, 2048), max_length=37, batch_size=128,
                min_length=8, train_captions=30000)  # 6,000 train images x 5 captions
GPU_MATMUL_N = 8192  # 2048^2 products leave most of a large GPU idle
QUICK = dict(steps=3, warmup=1, images=2, beams="3", matmul_n=1024)  # smaller n understates the peak


# ----------------------------------------------------------------------------------------- FLOPs
def merge_flops_per_token(spec, hp: dict, tokens_per_caption: float) -> float:
    """Training FLOPs per target token of the merge family, counted from the architecture.

    MACs per target token (U = units, V = vocabulary, D = image vector size, T = mean target tokens
    per caption; biases, activations and the softmax are ignored as lower-order terms):
        image Dense      D*U / T          (once per caption, amortised over its tokens)
        embedding        0                (a lookup)
        LSTM             4*(U + U)*U      (4 gates, input U and hidden U, one step per token)
        hidden Dense(s)  W*U per layer    (W = U for add fusion, 2U for concat on the first layer)
        output Dense     U*V
    forward FLOPs = 2 * MACs; training = 3 * forward (the backward pass costs twice the forward).
    """
    u, v, d = hp["units"], spec.vocab_size, spec.global_dim
    width = u if hp.get("fusion", "add") == "add" else 2 * u
    hidden = sum((width if i == 0 else u) * u for i in range(hp.get("hidden_layers", 1)))
    macs = d * u / tokens_per_caption + 4 * (u + u) * u + hidden + u * v
    return 3 * 2 * macs


def pad_free(batch):
    """The batch with every caption cut or extended to the mean length: no pads, so the FLOPs a model
    computes on it are the FLOPs its tokens need (a model that runs over pads would count them)."""
    from dataclasses import replace

    n = int(round(float(batch.lengths.mean())))
    tokens = np.where(batch.tokens[:, :n] == 0, 4, batch.tokens[:, :n])  # a word where a pad was
    tokens[:, 0], tokens[:, n - 1] = batch.tokens[0, 0], 2  # <start> ... <end>
    return replace(batch, tokens=tokens.astype(np.int32), lengths=np.full(len(batch.lengths), n, np.int32))


def counted_flops_per_token(model, batch) -> float:
    """A torch model's FLOPs for one forward+backward of `batch`, per target token (FlopCounterMode).

    oneDNN is switched off while counting: its fused LSTM kernel is invisible to the counter, the
    reference implementation runs the same matmuls through ops the counter sees."""
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from backends.torch import train as T

    dev = next(model.parameters()).device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's flags() warns about Intel-GPU TF32, irrelevant here
        # force_eager: a --compile run's model is counted op by op, as an eager one is
        with torch.backends.mkldnn.flags(enabled=False), torch.compiler.set_stance("force_eager"), \
                FlopCounterMode(display=False) as counter:
            T.masked_loss(model, T.to_tensors(batch, dev), with_aux=True).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch.num_tokens


# -------------------------------------------------------------------------------------- children
def flickr8k_batches(spec, batch_size: int, pad_to_max: bool, seed: int, pool: int = 4) -> list:
    """Random captions at Flickr8k's shapes: lengths uniform in [8, 37] tokens with <start>/<end>."""
    from shared_data.batches import Batch

    out = []
    for i in range(pool):
        rng = np.random.default_rng([seed, i])
        lengths = rng.integers(FLICKR8K["min_length"], spec.max_length + 1, batch_size).astype(np.int32)
        tokens = np.zeros((batch_size, spec.max_length), np.int32)
        for r, n in enumerate(lengths):
            tokens[r, 0], tokens[r, n - 1] = spec.start_id, spec.end_id
            tokens[r, 1:n - 1] = rng.integers(4, spec.vocab_size, n - 2)  # after <pad> <start> <end> <unk>
        width = spec.max_length if pad_to_max else int(lengths.max())
        spatial = None
        if spec.spatial_shape is not None:
            spatial = rng.standard_normal((batch_size, *spec.spatial_shape), np.float32)
        out.append(Batch(rows=np.arange(batch_size), tokens=tokens[:, :width], lengths=lengths,
                         global_feats=rng.standard_normal((batch_size, spec.global_dim), np.float32),
                         spatial_feats=spatial))
    return out


def _cycle(make_epoch):
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


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


def measure_matmul(n: int, repeats: int = 5) -> dict:
    """The machine's matmul rate in GFLOP/s (2*n^3 per product): fp32 by torch and by numpy, bf16 by torch
    (the denominator of a --precision bf16 run's MFU)."""
    import torch

    def rate(mm, a, b, sync=lambda: None):
        for _ in range(2):
            mm(a, b)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            mm(a, b)
        sync()
        return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9

    from backends.torch.train import device, ieee_fp32

    dev = device()
    ieee_fp32()  # the fp32 rate is IEEE fp32's, as the runs' (not TF32's)
    x = np.random.default_rng(0).standard_normal((n, n), np.float32)
    numpy_gflops, numpy_n = rate(np.matmul, x, x), n  # numpy's is the host CPU's rate, at the CPU's size
    if dev.type == "cuda":
        n = max(n, GPU_MATMUL_N)  # a GPU reaches its rate only on large products
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return {"n": n, "numpy_n": numpy_n, "torch_gflops": rate(torch.matmul, a, b, sync), "numpy_gflops": numpy_gflops,
            "torch_bf16_gflops": rate(torch.matmul, a.bfloat16(), b.bfloat16(), sync),
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else str(dev),
            "torch_threads": torch.get_num_threads()}


def peak_gflops(matmul: dict, precision: str) -> float:
    """The rate MFU is taken over: fp32, the faster of torch's and numpy's GEMM (TensorFlow's can beat
    torch's); bf16, torch's bf16 GEMM."""
    if precision == "bf16":
        return matmul["torch_bf16_gflops"]
    return max(matmul["torch_gflops"], matmul["numpy_gflops"])


def run_plugin(job: dict) -> dict:
    from plugins.registry import ModelSpec, PluginRef

    ref = PluginRef.parse(job["plugin"])
    if ref.keras_backend:
        os.environ["KERAS_BACKEND"] = ref.keras_backend  # before keras is first imported
    import backends
    from backends.common import Execution, OptimConfig
    from shared_data.batches import CaptionTable, iterate_batches, iterate_prefix_batches, num_batches
    from shared_data.dataset import load_dataset

    plugin = ref.plugin
    backend = backends.load(plugin.framework)
    hp = dict(plugin.defaults)
    bs, seed = job["batch_size"], job["seed"]
    out = {"plugin": job["plugin"], "framework": plugin.framework, "family": plugin.family,
           "shapes": job["shapes"]}
    if job["shapes"] == "flickr8k":
        f = FLICKR8K
        spec = ModelSpec(f["vocab_size"], f["global_dim"], f["spatial_shape"] if plugin.needs_spatial else None,
                         f["max_length"])
        bs = f["batch_size"]
        pool = flickr8k_batches(spec, bs, backend.FIXED_SHAPES, seed)
        sequence = _cycle(lambda _: pool)
        prefix = None  # the expansion at these shapes costs minutes a step on a CPU: measured on the dataset
        epoch_batches = {"sequence": num_batches(f["train_captions"], bs)}
        lengths = np.concatenate([b.lengths for b in pool])
    else:
        ds = load_dataset(job["dataset"], Path(job["data_dir"]) if job.get("data_dir") else None, verify=False)
        feats = ds.features(job["extractor"], spatial=plugin.needs_spatial, global_=plugin.needs_global)
        spec = ModelSpec.of(ds, feats)
        table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
        padding = backend.Runner.PREFIX_PADDING
        sequence = _cycle(lambda e: iterate_batches(ds, "train", feats, bs, seed, e, table=table,
                                                    pad_to_max=backend.FIXED_SHAPES))
        if job.get("features") == "both":  # the same batches from features loaded into memory, side by side
            loaded = feats.in_memory()
            in_memory = _cycle(lambda e: iterate_batches(ds, "train", loaded, bs, seed, e, table=table,
                                                         pad_to_max=backend.FIXED_SHAPES))
        prefix = _cycle(lambda e: iterate_prefix_batches(ds, "train", feats, bs, seed, e, padding=padding,
                                                         pad_to_max=backend.FIXED_SHAPES, table=table))
        if job.get("features") == "both":
            prefix = None  # this mode compares input pipelines; the expansion of a large grid would not fit
        n_images = len(table.per_image)
        epoch_batches = {"sequence": num_batches(len(table), bs),
                         "prefix": -(-n_images // table.images_per_batch(bs))}
        lengths = table.lengths
    out.update(vocab_size=spec.vocab_size, global_dim=spec.global_dim, batch_size=bs,
               epoch_batches=epoch_batches, tokens_per_caption=float(np.mean(lengths - 1)))

    execution = Execution(job.get("precision", "fp32"), job.get("compile", False))
    runner = backend.Runner(plugin, spec, {}, seed, OptimConfig(), execution)
    out["device"], out["execution"], out["versions"] = runner.device_name(), execution.to_json(), runner.versions()
    if plugin.family == "merge":
        out["flops_per_token"] = merge_flops_per_token(spec, hp, out["tokens_per_caption"])
        out["flops_source"] = "formula"
    elif plugin.framework == "torch":
        out["flops_per_token"] = counted_flops_per_token(runner.model, pad_free(next(sequence)))
        out["flops_source"] = "FlopCounterMode"
    else:  # the torch twin of the same architecture (the parity tests show they compute the same thing)
        out["flops_per_token"], out["flops_source"] = None, "n/a"

    if job.get("features") == "both" and job["shapes"] == "dataset":
        both = time_interleaved(runner, {"disk": sequence, "memory": in_memory}, job["steps"], job["warmup"])
        out["training"] = {"sequence": both["disk"]}
        out["features_in_memory"] = both["memory"]
        del loaded
    else:
        out["training"] = {"sequence": time_training(runner, sequence, job["steps"], job["warmup"])}
    if prefix is not None:
        out["training"]["prefix"] = time_training(runner, prefix, job["steps"], job["warmup"])
    out["decoding"] = []
    if job["shapes"] == "dataset" and job["images"]:
        rows = ds.splits["test"].feature_rows[:job["images"]]
        g = feats.global_[rows]
        s = None if feats.spatial is None else feats.spatial[rows]
        for beam in job["beams"]:
            out["decoding"].append(time_decoding(runner, g, s, ds.max_length, beam, job["alpha"]))
    return out


def twin_flops(job: dict) -> dict:
    """FLOPs per target token of a Keras plugin's architecture, counted on its torch twin (same layers,
    same shapes; tests/test_parity_* transfer weights between them) in a process of its own."""
    import torch

    from plugins.registry import ModelSpec, get_plugin

    torch.manual_seed(0)
    f = FLICKR8K
    plugin = get_plugin(job["plugin"])
    spec = ModelSpec(f["vocab_size"], f["global_dim"], f["spatial_shape"] if plugin.needs_spatial else None,
                     f["max_length"])
    batch = pad_free(flickr8k_batches(spec, 16, False, job["seed"], pool=1)[0])
    return {"flops_per_token": counted_flops_per_token(plugin.build(spec), batch)}


def child_main(job: dict) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kinds = {"matmul": lambda j: measure_matmul(j["matmul_n"]), "plugin": run_plugin, "twin_flops": twin_flops}
    result = kinds[job["kind"]](job)
    print(RESULT + json.dumps(result), flush=True)
    return 0


def _run_child(job: dict) -> dict:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.measure", "--one", json.dumps(job)], cwd=root,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        return {"error": f"{job.get('plugin', job['kind'])} ({job.get('shapes', '')}) exited {proc.returncode}",
                "log_tail": tail}
    return json.loads(lines[-1][len(RESULT):])


# ------------------------------------------------------------------------------------------ table
HEADERS = ["plugin", "shapes", "measure", "recipe's way", "ours", "speed-up"]


def _fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:,.{digits}f}"


def table_rows(results: list[dict], matmul_gflops: float, precision: str = "fp32") -> list[list]:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["error"], "", "failed", "", "", ""])
            continue
        shapes = f"{r['shapes']} (V={r['vocab_size']}, D={r['global_dim']}, B={r['batch_size']})"
        seq, pre = r["training"]["sequence"], r["training"].get("prefix")

        def ratio(ours, theirs):
            return f"{ours / theirs:.1f}x" if ours and theirs else "—"

        pre_tps = pre["tokens_per_s"] if pre else None
        rows.append([r["plugin"], shapes, "training tokens/s (prefix vs sequence)", _fmt(pre_tps),
                     _fmt(seq["tokens_per_s"]), ratio(seq["tokens_per_s"], pre_tps)])
        if "features_in_memory" in r:  # the same batches, features read from disk (ours) vs loaded
            loaded = r["features_in_memory"]["tokens_per_s"]
            rows.append([r["plugin"], shapes, "training tokens/s (features in memory vs read from disk)",
                         _fmt(loaded), _fmt(seq["tokens_per_s"]), f"{seq['tokens_per_s'] / loaded:.2f}x"])
        epoch = {m: r["epoch_batches"][m] / t["steps_per_s"] for m, t in r["training"].items()}
        rows.append([r["plugin"], shapes, "s per epoch (extrapolated: batches/epoch ÷ steps/s)",
                     _fmt(epoch.get("prefix")), _fmt(epoch["sequence"]),
                     ratio(epoch.get("prefix"), epoch["sequence"])])
        # the first step carries tracing/compilation (torch.compile, XLA, tf.function) and first-touch costs
        first = {m: t.get("first_step_s") for m, t in r["training"].items()}
        steady = {m: 1 / t["steps_per_s"] for m, t in r["training"].items()}
        rows.append([r["plugin"], shapes, "time to first step s (steady step s)",
                     f"{_fmt(first.get('prefix'), 2)} ({_fmt(steady.get('prefix'), 3)})" if "prefix" in first else "—",
                     f"{_fmt(first['sequence'], 2)} ({_fmt(steady['sequence'], 3)})", ""])
        for d in r["decoding"]:
            same = "" if d["captions_differ"] == 0 else f" ({d['captions_differ']} captions DIFFER)"
            rows.append([r["plugin"], shapes, f"beam {d['beam']} captions/s (per image vs batched){same}",
                         _fmt(d["per_image_captions_per_s"]), _fmt(d["batched_captions_per_s"]),
                         ratio(d["batched_captions_per_s"], d["per_image_captions_per_s"])])
        fpt = r["flops_per_token"]
        if fpt is None:
            rows.append([r["plugin"], shapes, "MFU", "n/a", "n/a", ""])
            continue
        r["achieved_gflops"] = {m: t["tokens_per_s"] * fpt / 1e9 for m, t in r["training"].items()}
        r["mfu"] = {m: g / matmul_gflops for m, g in r["achieved_gflops"].items()}
        rows.append([r["plugin"], shapes, f"training GFLOP/s ({fpt / 1e6:.2f} MFLOP/token, {r['flops_source']})",
                     _fmt(r["achieved_gflops"].get("prefix"), 2), _fmt(r["achieved_gflops"]["sequence"], 2), ""])
        rows.append([r["plugin"], shapes, f"MFU (of {matmul_gflops:.1f} GFLOP/s {precision} matmul)",
                     _fmt(100 * r["mfu"]["prefix"], 1) + "%" if "prefix" in r["mfu"] else "—",
                     _fmt(100 * r["mfu"]["sequence"], 1) + "%", ""])
    return rows


MFU_HEADERS = ["plugin", "shapes", "MFLOP per target token", "counted by", "train tokens/s", "GFLOP/s", "MFU",
               "first step s"]


def mfu_rows(results: list[dict]) -> list[list]:
    """One line per plugin and shapes: the hardware-efficiency figures of table_rows, side by side."""
    rows = []
    for r in results:
        if "error" in r or "mfu" not in r:
            continue
        rows.append([r["plugin"], r["shapes"], _fmt(r["flops_per_token"] / 1e6, 2), r["flops_source"],
                     _fmt(r["training"]["sequence"]["tokens_per_s"], 0), _fmt(r["achieved_gflops"]["sequence"], 1),
                     _fmt(100 * r["mfu"]["sequence"], 1) + "%",
                     _fmt(r["training"]["sequence"]["first_step_s"], 2)])  # tracing, compiling, first touch
    return rows


ENGINE_COLUMNS = (TORCH_API, "Keras@torch", "Keras@tensorflow", "Keras@jax")
# (what the factor isolates, numerator, denominator): the API on one engine, the engine under one API, both
ENGINE_FACTORS = (("API", TORCH_API, "Keras@torch"), ("engine", "Keras@tensorflow", "Keras@torch"),
                  ("engine", "Keras@jax", "Keras@tensorflow"), ("both", "Keras@tensorflow", TORCH_API))
ENGINE_HEADERS = ["architecture", "shapes", *ENGINE_COLUMNS, *(f"{what}: {a} ÷ {b}" for what, a, b in ENGINE_FACTORS)]


def engine_rows(results: list[dict]) -> list[list]:
    """API or engine? One line per architecture and shapes: training tokens/s (MFU, time to the first step)
    of the torch.nn plugin and of its Keras twin on each engine, and the factors between them: torch.nn ÷
    Keras@torch is the API on one engine, Keras on one engine ÷ Keras on another the engine under one API.
    After table_rows, which adds the MFU. Architectures without a Keras twin (merge_packed) are left out."""
    from plugins.registry import architecture

    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for r in results:
        if "error" not in r:
            arch = architecture(r["plugin"].split("@")[0])
            cells.setdefault((arch, r["shapes"]), {})[api_engine(r["framework"], r["versions"])] = r

    rows = []
    for (arch, shapes), c in sorted(cells.items()):
        if any(k.startswith("Keras") for k in c):
            rows.append([arch, shapes, *(_engine_cell(c.get(k)) for k in ENGINE_COLUMNS),
                         *(_speed_ratio(c.get(a), c.get(b)) for _, a, b in ENGINE_FACTORS)])
    return rows


def _engine_cell(r: dict | None) -> str:
    if r is None:
        return "—"
    seq, mfu = r["training"]["sequence"], r.get("mfu", {}).get("sequence")
    share = f"{100 * mfu:.1f}% MFU, " if mfu is not None else ""
    return f"{seq['tokens_per_s']:,.0f} ({share}{_fmt(seq['first_step_s'], 1)} s)"


def _speed_ratio(a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{a['training']['sequence']['tokens_per_s'] / b['training']['sequence']['tokens_per_s']:.2f}x"


# ---------------------------------------------------------------------------------------- command
SETTINGS = ("batch_size", "seed", "precision", "compile", "length_alpha")  # the run settings perf takes


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchmarks.run.settings import add_arguments as add_settings
    from shared_data.dataset import DEFAULT_DATASET

    p.add_argument("--plugins", default="torch_merge,keras_merge",
                   help="comma-separated plugin names (keras_merge@jax: on another Keras engine), or all: every "
                        "plugin, each Keras one on every engine installed (default torch_merge,keras_merge)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="prepared dataset (default: the embedded one)")
    p.add_argument("--data-dir", type=Path, default=None, help="where prepared datasets live")
    p.add_argument("--extractor", default=None, help="default: the dataset's first extractor")
    p.add_argument("--steps", default=None, help="timed training steps per mode (default 30)")
    p.add_argument("--warmup", default=None, help="untimed steps before them (default 5)")
    p.add_argument("--beams", default=None, help="beam sizes for decoding (default 3,5)")
    p.add_argument("--images", default=None,
                   help="test images decoded both ways (default 500: one batch of the worker's test decoding)")
    p.add_argument("--shapes", choices=["dataset", "flickr8k", "both"], default="both",
                   help="dataset: training, decoding and MFU on the dataset; flickr8k: MFU at Flickr8k's shapes")
    add_settings(p, SETTINGS)  # batch size on the dataset, seed, precision (bf16: MFU over the bf16 rate), ...
    p.add_argument("--out", type=Path, default=Path("results/perf"), help="where perf.json and perf.md go")
    p.add_argument("--quick", action="store_true", help="tiny: a few steps and images (tests, CI)")
    p.add_argument("--features", choices=["disk", "both"], default="disk",
                   help="both: also time training on the dataset with its features loaded into memory, beside "
                        "the default (read from disk as batches need them), instead of the prefix expansion")


def main(args: argparse.Namespace) -> int:
    from benchmarks.run.preflight import check_precision
    from benchmarks.run.settings import from_args
    from plugins.registry import PluginRef, every_engine, framework_of
    from plugins.registry import twin as twin_of
    from shared_data.dataset import load_dataset
    from shared_data.errors import UserError
    from shared_data.values import Interval, coerce

    settings = from_args(args, SETTINGS)
    args.batch_size, args.seed, args.length_alpha = settings.batch_size, settings.seed, settings.length_alpha
    args.precision, args.compile = settings.precision, settings.compile
    defaults = QUICK if args.quick else dict(steps=30, warmup=5, images=500, beams="3,5", matmul_n=2048)
    counts = {}
    for flag, key, low in (("--steps", "steps", 1), ("--warmup", "warmup", 0), ("--images", "images", 0)):
        raw = getattr(args, key)
        try:
            counts[key] = defaults[key] if raw is None else coerce(raw, int, interval=Interval(low, math.inf,
                                                                                                True, False))
        except ValueError as e:
            raise UserError(f"{flag} {raw}: {e}") from None
    steps, warmup, images = counts["steps"], counts["warmup"], counts["images"]
    try:
        beams = [coerce(b, int, interval=Interval(1, 100, True, True))
                 for b in (args.beams or defaults["beams"]).split(",")]
    except ValueError as e:
        raise UserError(f"--beams {args.beams}: each beam size {e}") from None

    if args.out.exists() and not args.out.is_dir():  # before minutes of measuring, not after
        raise UserError(f"--out {args.out}: a file is in the way; give a folder for perf.json and perf.md")
    refs = (every_engine() if args.plugins == "all"  # Keras plugins on each engine installed
            else [PluginRef.parse(p) for p in args.plugins.split(",") if p])  # unknown: one line now, with the list
    plugins = [str(r) for r in refs]
    check_precision([(r, {}) for r in refs], args.precision)  # bf16 where this CPU cannot: one line now
    shapes = ["dataset", "flickr8k"] if args.shapes == "both" else [args.shapes]
    dataset = None
    if "dataset" in shapes:  # fail in one line now, not in every child
        ds = load_dataset(args.dataset, args.data_dir, verify=True)
        args.extractor = args.extractor or ds.default_extractor
        ds.features(args.extractor)
        dataset = str(ds.path)

    matmul = _run_child({"kind": "matmul", "matmul_n": defaults["matmul_n"]})
    if "error" in matmul:
        print(f"error: {matmul['error']}\n" + "\n".join(matmul["log_tail"]), file=sys.stderr)
        return 1
    results, twin_counts = [], {}  # a twin's count serves each engine of its Keras plugin
    for plugin in plugins:
        for shape in shapes:
            print(f"perf: {plugin} at {shape} shapes ...", file=sys.stderr, flush=True)
            r = _run_child({
                "kind": "plugin", "plugin": plugin, "shapes": shape, "dataset": dataset,
                "extractor": args.extractor, "batch_size": args.batch_size, "steps": steps, "warmup": warmup,
                "images": images, "beams": beams, "alpha": args.length_alpha, "seed": args.seed,
                "precision": args.precision, "compile": args.compile, "features": args.features})
            name = PluginRef.parse(plugin).name
            twin = name if framework_of(name) == "torch" else twin_of(name)
            if r.get("flops_per_token", 0) is None and shape == "flickr8k" and twin:
                if twin not in twin_counts:
                    twin_counts[twin] = _run_child({"kind": "twin_flops", "plugin": twin, "seed": args.seed})
                counted = twin_counts[twin]
                if "error" not in counted:
                    r["flops_per_token"], r["flops_source"] = counted["flops_per_token"], f"counted on {twin}"
            results.append(r)
            # written after every plugin: a perf stopped half-way (a time limit, ^C) keeps what it measured
            report = _write(args, matmul, results, plugins, shapes, dataset, counts | {"beams": beams})
    print(report + f"\n\nwritten: {args.out / 'perf.md'}, {args.out / 'perf.json'}")
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"error: {r['error']}\n  " + "\n  ".join(r["log_tail"]), file=sys.stderr)
    differ = any(d["captions_differ"] for r in results if "error" not in r for d in r["decoding"])
    if differ:
        print("error: batched and per-image beam search gave different captions", file=sys.stderr)
    return 1 if failed or differ else 0


def _write(args, matmul: dict, results: list[dict], plugins: list[str], shapes: list[str], dataset,
           counts: dict) -> str:
    """perf.json and perf.md for the results so far (atomically: a reader never sees half a file); the
    text printed at the end."""
    from tabulate import tabulate

    from benchmarks.store.rundir import write_text

    peak = peak_gflops(matmul, args.precision)
    rows = table_rows(results, peak, args.precision)
    table = tabulate(rows, headers=HEADERS, tablefmt="github")
    mfu = tabulate(mfu_rows(results), headers=MFU_HEADERS, tablefmt="github")
    engines = engine_rows(results)
    if engines:
        mfu += ("\n\n## API or engine?\n\nTraining tokens/s in steady state (MFU, time to the first step), "
                "each plugin on each engine it ran on:\n\n" + tabulate(engines, headers=ENGINE_HEADERS,
                                                                            tablefmt="github"))
    device = next((r["device"] for r in results if "device" in r), matmul["device"])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n, numpy_n = matmul["n"], matmul.get("numpy_n", matmul["n"])  # results from before numpy_n: one size
    machine = (f"{platform.processor() or platform.machine()}, {device}; matmul {n}x{n}: "
               f"fp32 torch {matmul['torch_gflops']:.1f} GFLOP/s, bf16 torch {matmul['torch_bf16_gflops']:.1f} "
               f"GFLOP/s; host fp32 numpy {matmul['numpy_gflops']:.1f} GFLOP/s at {numpy_n}x{numpy_n}")
    execution = f"precision {args.precision}, " + ("compiled (torch.compile / Keras jit_compile)" if args.compile
                                                   else "not compiled (PyTorch eager, Keras tf.function without "
                                                        "XLA; Keras on JAX is always jitted)")
    notes = (f"Training: {counts['steps']} timed steps after {counts['warmup']} warm-up steps, each "
             "device-synchronised; tokens are target tokens (Batch.num_tokens). Epoch times are extrapolated "
             "from steps/s and the batches in one epoch (Flickr8k: 30,000 train captions). Prefix expansion is "
             "measured on the dataset only. "
             "Decoding: the same test images, batched vs one image at a time (batch = beam); captions asserted "
             "identical. MFU: target tokens/s x FLOPs per target token (merge: counted from the architecture, "
             "see merge_flops_per_token; others: FlopCounterMode on a pad-free batch, Keras plugins on their "
             "torch twin), over the faster fp32 matmul rate above (bf16 runs: torch's bf16 rate). The time to "
             "the first step includes tracing and compilation; the steady step time beside it excludes both.")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "perf.json", json.dumps(
        {"date": date, "machine": machine, "matmul": matmul, "headers": HEADERS, "rows": rows, "results": results,
         "settings": {**counts, "plugins": plugins, "shapes": shapes, "dataset": dataset,
                      "batch_size": args.batch_size, "quick": args.quick, "precision": args.precision,
                      "compile": args.compile, "finished": len(results) == len(plugins) * len(shapes)}},
        indent=1, default=float))
    write_text(args.out / "perf.md", f"# Performance\n\n{date}; {machine}\n\n{execution}\n\n{table}\n\n{notes}\n\n"
                                      f"## Hardware efficiency by plugin\n\n{mfu}\n")
    return f"{date}; {machine}\n{execution}\n\n{table}\n\n{mfu}"


def _standalone(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.perf.measure [--one JOB | options]`: a child's entry point, and perf without the CLI."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        return child_main(json.loads(argv[1]))
    from shared_data.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m benchmarks perf", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return main(parser.parse_args(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
