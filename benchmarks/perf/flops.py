"""FLOPs and the hardware's peak: each model's training FLOPs per token, counted by the framework's
own counter and, for the merge family, by formula; a measured matmul peak for MFU."""
from __future__ import annotations

import time

import numpy as np

from benchmarks.perf.shapes import FLICKR8K, flickr8k_batches

GPU_MATMUL_N = 8192  # 2048^2 products leave most of a large GPU idle


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
    import backends

    return {"flops_per_token": backends.load("torch").Runner.count_flops(plugin.build(spec), batch)}
