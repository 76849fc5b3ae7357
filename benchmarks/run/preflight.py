"""Can this machine run the requested execution? A one-step trial before any run starts.

PyTorch's CPU bf16 nn.LSTM is oneDNN's, and oneDNN creates it only on CPUs with AVX-512: on an
AVX2-only CPU (CI's, for one) every bf16 step of an nn.LSTM plugin fails with "could not create a
primitive descriptor for the LSTM forward propagation primitive", while nn.RNN, nn.LSTMCell and the
Transformer run. Found in each run after it started, that failure cost a study its wall clock and
left failed rows; found here, it is one line before anything is written. `ONEDNN_MAX_CPU_ISA=AVX2`
makes an AVX-512 machine behave like such a CPU (the tests use it).

The trial builds each PyTorch plugin with its run's hyperparameters on a tiny synthetic spec and
takes one training step and one greedy decode under autocast, in a child process, so the calling
process (a study's orchestrator) never imports torch. Keras plugins need no trial: TensorFlow's,
JAX's and Keras-on-torch's CPU LSTMs are not oneDNN's RNN primitive.
"""

from __future__ import annotations

import json
import subprocess
import sys

from plugins.registry import PluginRef
from shared_data.errors import UserError

PROBE_SPEC = dict(vocab_size=16, global_dim=8, spatial_shape=(4, 8), max_length=6)


def trial(name: str, hparams: dict, precision: str) -> str | None:
    """One training step and one greedy decode of a PyTorch plugin at `precision`: None when both
    run, else the framework's error, first line."""
    import numpy as np

    from backends.common import Execution, OptimConfig
    from backends.torch.runner import Runner
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import Batch

    spec = ModelSpec(**PROBE_SPEC)
    rng = np.random.default_rng(0)
    tokens = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]], np.int32)
    lengths = (tokens != 0).sum(1).astype(np.int32)
    batch = Batch(np.arange(2), tokens, lengths, rng.standard_normal((2, 8), np.float32),
                  rng.standard_normal((2, 4, 8), np.float32))
    try:
        runner = Runner(get_plugin(name), spec, hparams, seed=0, optim=OptimConfig(), execution=Execution(precision))
        runner.train_step(batch)
        runner.greedy(batch.global_feats, batch.spatial_feats, spec.max_length)
    except Exception as e:  # noqa: BLE001 - whatever the framework raises is the answer
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return first.split(". ")[0].rstrip(".")  # oneDNN appends "Run workload with ONEDNN_VERBOSE..."
    return None


def check_precision(plugins: list[tuple[PluginRef, dict]], precision: str) -> None:
    """Refuse, in one line, PyTorch plugins (with their hyperparameters) that cannot run at `precision`
    here. fp32 always runs; bf16 is tried."""
    trials = [(ref.name, h) for ref, h in plugins if ref.plugin.framework == "torch"]
    if precision == "fp32" or not trials:
        return
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run.preflight", precision, json.dumps(trials)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"--precision {precision}: the trial step of {', '.join(n for n, _ in trials)} crashed "
                        f"({tail}); use --precision fp32")
    failed = json.loads(proc.stdout)
    if failed:
        names = sorted(failed)
        reason = failed[names[0]]
        lstm = " (oneDNN's bf16 LSTM needs a CPU with AVX-512)" if "LSTM" in reason else ""
        raise UserError(f"--precision {precision}: {', '.join(names)} cannot run in {precision} on this machine: "
                        f"PyTorch says '{reason}'{lstm}; run them with --precision fp32, or on a GPU")


if __name__ == "__main__":
    precision, todo = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    for name, hparams in todo:
        # a model that fails in fp32 too (say d_model not divisible by nhead) is not the precision's
        # problem: its run fails and says so, as any fp32 run would
        if (err := trial(name, hparams, precision)) is not None and trial(name, hparams, "fp32") is None:
            out[name] = err
    print(json.dumps(out))
