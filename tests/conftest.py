"""Shared fixtures: one small synthetic dataset per test session, prepared through the real CLI code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# keep TensorFlow quiet and off any GPU a developer machine may have: tests must pass on CPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def small_dataset(data_dir) -> Path:
    """synthetic --size small with grid features (fast, numpy; synthnet has its own tests), prepared once
    per session."""
    from benchmarks.data.options import PrepareOptions
    from benchmarks.data.prepare import prepare

    return prepare(PrepareOptions(size="small", extractor="grid", data_dir=data_dir), log=lambda *_: None)


CAPTION_PLUGINS = ("torch_merge", "keras_merge", "torch_show_attend_tell")


@pytest.fixture(scope="session")
def caption_runs(small_dataset, data_dir, tmp_path_factory) -> Path:
    """Finished runs (30 steps) of CAPTION_PLUGINS on the small dataset, weights kept, trained once per
    session through the real CLI for the tests that caption with a run."""
    import subprocess
    import sys

    cwd = tmp_path_factory.mktemp("caption-runs")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--plugins", ",".join(CAPTION_PLUGINS),
                           "--dataset", "synthetic-small", "--steps", "30", "--no-meteor", "--study", "c",
                           "--data-dir", str(data_dir)], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd / "results" / "c"
