"""Where a training step's time goes: `python -m benchmarks.profile PLUGIN [--steps N] [--top K] [--compile]`.

Runs PLUGIN's train_step at perf's Flickr8k shapes (perf.FLICKR8K: batch 128, V 8,485, 4096 + 14x14x2048
features, random captions of 8-37 tokens) under torch.profiler and prints the operators that took the
most CPU time, self time first, with their call counts. It profiles whatever runs torch ops: the
PyTorch plugins and the Keras plugins on the torch engine (`keras_merge@torch`). TensorFlow and JAX
have their own profilers (TensorBoard's), not wired in here.

What the table tells apart: per-op dispatch (many calls of cheap ops: the time loop's Python and
autograd overhead), GEMM (aten::addmm / aten::mm / aten::bmm: the math library), and memory-bound
element-wise work (add, relu, softmax and their backward ops over [B, P, A] tensors)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    p.add_argument("plugin", help="a PyTorch plugin, or a Keras one on the torch engine (keras_merge@torch)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps, after 2 untimed ones (default 3)")
    p.add_argument("--top", type=int, default=15, help="operators listed (default 15)")
    p.add_argument("--compile", action="store_true",
                   help="the step as --compile runs it (torch.compile: inductor's kernels show as 'Call "
                        "CompiledFxGraph' rows; the first, compiling steps are among the untimed ones)")
    args = p.parse_args(argv)

    from plugins.registry import PluginRef
    from shared_data.errors import UserError

    try:
        ref = PluginRef.parse(args.plugin)
        if ref.plugin.framework == "keras" and ref.keras_backend != "torch":
            raise UserError(f"{args.plugin}: torch.profiler sees torch ops only; profile {ref.name}@torch, "
                            "or a PyTorch plugin")
        if args.steps < 1 or args.top < 1:
            raise UserError("--steps and --top must be at least 1")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ref.keras_backend:
        os.environ["KERAS_BACKEND"] = ref.keras_backend  # before keras is first imported

    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    import backends
    from backends.common import Execution, OptimConfig
    from benchmarks.perf.shapes import FLICKR8K, flickr8k_batches
    from plugins.registry import ModelSpec

    plugin = ref.plugin
    backend = backends.load(plugin.framework)
    f = FLICKR8K
    spec = ModelSpec(f["vocab_size"], f["global_dim"], f["spatial_shape"] if plugin.needs_spatial else None,
                     f["max_length"])
    batches = flickr8k_batches(spec, f["batch_size"], backend.FIXED_SHAPES, seed=0)
    runner = backend.Runner(plugin, spec, {}, 0, OptimConfig(), Execution("fp32", args.compile))
    for b in batches[:2]:
        runner.train_step(b)
    tokens = 0
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            b = batches[i % len(batches)]
            runner.train_step(b)
            tokens += int(np.sum(b.lengths - 1))
    wall = time.perf_counter() - t0
    mode = " compiled" if args.compile else ""
    print(f"{ref}{mode}: {args.steps} steps at Flickr8k shapes, {wall / args.steps:.2f} s a step under the profiler, "
          f"{tokens / wall:,.0f} target tokens/s; {torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
