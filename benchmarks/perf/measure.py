"""`python -m benchmarks perf`: how much faster than the recipes people copy, and how close to the machine.

Three measurements, each plugin in its own child process (`python -m benchmarks.perf.measure --one JOB`)
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
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.perf.flops import (
    peak_gflops,
)
from benchmarks.perf.tables import ENGINE_HEADERS, HEADERS, MFU_HEADERS, engine_rows, mfu_rows, table_rows
from benchmarks.perf.timing import child_main, run_child

QUICK = dict(steps=3, warmup=1, images=2, beams="3", matmul_n=1024)  # smaller n understates the peak


# ---------------------------------------------------------------------------------------- command
SETTINGS = ("batch_size", "seed", "precision", "compile", "length_alpha")  # the run settings perf takes


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchmarks.settings import add_arguments as add_settings
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
    from benchmarks.settings import from_args
    from plugins.registry import PluginRef, every_engine
    from shared_data.dataset import load_dataset
    from shared_data.errors import UserError

    settings = from_args(args, SETTINGS)
    args.batch_size, args.seed, args.length_alpha = settings.batch_size, settings.seed, settings.length_alpha
    args.precision, args.compile = settings.precision, settings.compile
    defaults = QUICK if args.quick else dict(steps=30, warmup=5, images=500, beams="3,5", matmul_n=2048)
    counts, beams = _counts(args, defaults)
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

    matmul = run_child({"kind": "matmul", "matmul_n": defaults["matmul_n"]})
    if "error" in matmul:
        print(f"error: {matmul['error']}\n" + "\n".join(matmul["log_tail"]), file=sys.stderr)
        return 1
    results, twin_counts = [], {}  # a twin's count serves each engine of its Keras plugin
    for plugin in plugins:
        for shape in shapes:
            r = _measure(args, plugin, shape, dataset, counts, beams, twin_counts)
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


def _counts(args: argparse.Namespace, defaults: dict) -> tuple[dict, list[int]]:
    """--steps, --warmup and --images (their defaults where unset), and the beam sizes, checked."""
    from shared_data.errors import UserError
    from shared_data.values import Interval, coerce

    counts = {}
    for flag, key, low in (("--steps", "steps", 1), ("--warmup", "warmup", 0), ("--images", "images", 0)):
        raw = getattr(args, key)
        try:
            counts[key] = defaults[key] if raw is None else coerce(raw, int, interval=Interval(low, math.inf,
                                                                                                True, False))
        except ValueError as e:
            raise UserError(f"{flag} {raw}: {e}") from None
    try:
        beams = [coerce(b, int, interval=Interval(1, 100, True, True))
                 for b in (args.beams or defaults["beams"]).split(",")]
    except ValueError as e:
        raise UserError(f"--beams {args.beams}: each beam size {e}") from None
    return counts, beams


def _measure(args, plugin: str, shape: str, dataset, counts: dict, beams: list[int], twin_counts: dict) -> dict:
    """One plugin at one set of shapes, in a child process; a Keras plugin without a FLOP count gets its
    torch twin's (counted once per twin)."""
    from plugins.registry import PluginRef, framework_of
    from plugins.registry import twin as twin_of

    print(f"perf: {plugin} at {shape} shapes ...", file=sys.stderr, flush=True)
    r = run_child({
        "kind": "plugin", "plugin": plugin, "shapes": shape, "dataset": dataset,
        "extractor": args.extractor, "batch_size": args.batch_size, "steps": counts["steps"],
        "warmup": counts["warmup"], "images": counts["images"], "beams": beams, "alpha": args.length_alpha,
        "seed": args.seed, "precision": args.precision, "compile": args.compile, "features": args.features})
    name = PluginRef.parse(plugin).name
    twin = name if framework_of(name) == "torch" else twin_of(name)
    if r.get("flops_per_token", 0) is None and shape == "flickr8k" and twin:
        if twin not in twin_counts:
            twin_counts[twin] = run_child({"kind": "twin_flops", "plugin": twin, "seed": args.seed})
        counted = twin_counts[twin]
        if "error" not in counted:
            r["flops_per_token"], r["flops_source"] = counted["flops_per_token"], f"counted on {twin}"
    return r


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
