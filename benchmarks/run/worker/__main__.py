"""One run, in its own process: `python -m benchmarks.run.worker RUN_DIR` (RUN_DIR/config.json given).

Own process, so that TensorFlow and PyTorch never share one, timings and peak memory belong to one
model, and a crash is one failed row. The protocol is the same for every plugin: the same batches
from shared_data's iterator, the same budget, the same evaluation schedule (loss and decoded BLEU-4
on val after every epoch, best epoch by val BLEU-4, then test decoding and metrics).
Writes metrics.json last (atomically): a run folder without it did not finish.
"""
from __future__ import annotations

import errno
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.run.worker.context import hold_for_test, setup
from benchmarks.run.worker.evaluate import evaluate
from benchmarks.run.worker.loop import train
from benchmarks.run.worker.record import record
from benchmarks.run.worker.state import DIVERGED_EXIT, Diverged


def run(run_dir: Path) -> dict:
    """One run: set up, train under the budget, evaluate the best epoch, record."""
    t_start, started_at = time.perf_counter(), time.time()
    ctx = setup(run_dir)
    st, resumed, status, steps_per_epoch = train(ctx)
    hold_for_test(ctx)
    ev = evaluate(ctx, st, status)
    return record(ctx, st, resumed, status, steps_per_epoch, ev, t_start, started_at)


def _die_with_study() -> None:
    """A worker never outlives its study (kill -9 of the study included): Linux sends it SIGTERM when
    the study process dies (PR_SET_PDEATHSIG); a study that died before that was set up is caught by
    the parent check."""
    parent = os.environ.get("CAPBENCH_STUDY_PID")
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != int(parent):
        os._exit(1)


def main() -> int:
    run_dir = Path(sys.argv[1])
    _die_with_study()
    from shared_data.errors import UserError

    try:
        run(run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except OSError as e:  # a full disk or a folder made read-only while training: say so, leave no temporaries
        for tmp in run_dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        traceback.print_exc()
        print(f"error: cannot write in {run_dir} ({e.strerror or e}): "
              + ("free some disk space" if e.errno == errno.ENOSPC else "check the folder's permissions")
              + "; the next study command resumes from the last epoch's checkpoint", file=sys.stderr)
        return 1
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
