"""perf's tables: throughput per plugin and framework, hardware efficiency (MFU), Keras engines."""
from __future__ import annotations

import math

from backends.common import TORCH_API, api_engine

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
