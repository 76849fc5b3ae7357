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
    from benchmarks.prepare import PrepareOptions, prepare

    return prepare(PrepareOptions(size="small", extractor="grid", data_dir=data_dir), log=lambda *_: None)
