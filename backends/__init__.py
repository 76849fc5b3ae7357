"""One package per framework (backends/<framework>/), each with a Runner that fulfils backends/runner.py."""

from __future__ import annotations

import importlib


def load(framework: str):
    """The framework's backend module (backends/<framework>/runner.py, which imports the framework),
    checked against the contract: a TypeError names what it lacks."""
    from .runner import check_backend

    module = importlib.import_module(f"backends.{framework}.runner")
    check_backend(module)
    return module
