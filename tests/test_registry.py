"""The plugin registry: lazy framework imports, helpful errors, third-party entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from plugins import registry
from shared_data.errors import UserError


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_torch_plugin_never_imports_tensorflow():
    mods = _modules_after("from plugins.registry import get_plugin, ModelSpec\n"
                          "get_plugin('torch_concat').build(ModelSpec(50, 8, None, 10))")
    assert "torch" in mods and "tensorflow" not in mods and "keras" not in mods


def test_keras_plugin_never_imports_torch():
    mods = _modules_after("from plugins.registry import get_plugin\nget_plugin('keras_merge')")
    assert "keras" in mods and "torch" not in mods


def test_listing_names_imports_no_framework():
    mods = _modules_after("from plugins.registry import available_names\nprint(available_names())")
    assert not {"torch", "keras", "tensorflow"} & mods


def test_builtin_names():
    names = registry.available_names()
    for n in ("keras_merge", "keras_concat", "torch_merge", "torch_concat", "torch_merge_packed"):
        assert n in names


def test_unknown_plugin_lists_names_and_suggests():
    with pytest.raises(UserError) as e:
        registry.get_plugin("torch_concatt")
    msg = str(e.value)
    assert "did you mean torch_concat?" in msg and "keras_merge" in msg and "\n" not in msg


def test_unknown_hyperparameter():
    spec = registry.ModelSpec(50, 8, None, 10)
    with pytest.raises(UserError, match="torch_merge has no hyperparameter dropuot; it has: .*dropout"):
        registry.get_plugin("torch_merge").build(spec, dropuot=0.5)


def test_hyperparameter_override_reaches_the_model():
    spec = registry.ModelSpec(50, 8, None, 10)
    model = registry.get_plugin("torch_merge").build(spec, dropout=0.1, units=32)
    assert model.drop.p == 0.1 and model.lstm.hidden_size == 32


def test_third_party_plugin_through_entry_point(tmp_path, monkeypatch):
    """A tiny installed distribution (dist-info with an entry point) adds `torch_tiny`."""
    pkg = tmp_path / "capbench_tiny"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from plugins.registry import register
        import torch

        @register("torch_tiny", family="tiny", defaults={"units": 4}, description="a tiny third-party model")
        def build(spec, units):
            return torch.nn.Linear(spec.global_dim, units)
    '''))
    dist = tmp_path / "capbench_tiny-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: capbench-tiny\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[capbench.plugins]\ntorch_tiny = capbench_tiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "torch_tiny" in registry.available_names()
    plugin = registry.get_plugin("torch_tiny")
    assert plugin.family == "tiny" and plugin.module == "capbench_tiny"
    assert plugin.build(registry.ModelSpec(50, 8, None, 10)).out_features == 4
    monkeypatch.delitem(registry._REGISTRY, "torch_tiny")


def test_plugin_names_must_name_a_framework():
    with pytest.raises(ValueError, match="must start with one of"):
        registry.register("jax_thing", family="x")
