"""`tox -e perf`: time the tests/perf benchmarks, then save them as the baseline or compare against it.

    python tests/perf/gate.py                    # no baseline yet: save one; otherwise compare with it
    python tests/perf/gate.py --new-baseline     # save this run as the new baseline (after a wanted change)
    python tests/perf/gate.py --threshold median:10% -k torch_merge   # other pytest arguments pass through

pytest-benchmark alone cannot say "compare if there is a baseline, else make one": with nothing
saved, `--benchmark-compare-fail` stops pytest with a usage error (exit 4, pytest-benchmark 5.2), and
`--benchmark-compare` of the latest run would move the baseline forward with every run, letting a
slow creep through. So the baseline is a run saved under the name `baseline`
(.benchmarks/<machine id>/NNNN_baseline.json, git-ignored), the newest one is compared against, and
only --new-baseline replaces it. Baselines are per machine id (OS, Python implementation and version)
as pytest-benchmark stores them; they mean something only on the machine that saved them.

The gate compares medians: one round slowed by another process moves the mean, not the median.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from pytest_benchmark.session import PerformanceRegression
from pytest_benchmark.utils import get_machine_id

ROOT = Path(__file__).resolve().parents[2]
STORAGE = ROOT / ".benchmarks"
NAME = "baseline"


def newest_baseline() -> Path | None:
    # pytest-benchmark numbers saved runs 0001, 0002, ... within a machine id's folder
    runs = sorted((STORAGE / get_machine_id()).glob(f"[0-9][0-9][0-9][0-9]_{NAME}.json"))
    return runs[-1] if runs else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python tests/perf/gate.py", description=__doc__.splitlines()[0])
    p.add_argument("--new-baseline", action="store_true", help="save this run as the baseline, compare nothing")
    p.add_argument("--threshold", default="median:25%",
                   help="pytest-benchmark --benchmark-compare-fail expression (default median:25%%)")
    args, pytest_args = p.parse_known_args(argv)

    # sorted by name, so that each benchmark's baseline and current rows sit next to each other
    cmd = [str(ROOT / "tests" / "perf"), "--benchmark-enable", f"--benchmark-storage=file://{STORAGE}",
           "--benchmark-sort=name"]
    baseline = None if args.new_baseline else newest_baseline()
    if baseline is None:
        print(f"perf: saving this run as the baseline in {STORAGE / get_machine_id()}", flush=True)
        cmd.append(f"--benchmark-save={NAME}")
    else:
        print(f"perf: comparing against {baseline} (fail when {args.threshold} slower)", flush=True)
        cmd += [f"--benchmark-compare={baseline}", f"--benchmark-compare-fail={args.threshold}"]
    try:
        return int(pytest.main(cmd + pytest_args))
    except PerformanceRegression:  # raised after the table and the list of regressions are printed
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
