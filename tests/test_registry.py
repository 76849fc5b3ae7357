"""The plugin registry: lazy framework imports, helpful errors, third-party entry points."""

from __future__ import annotations

import os
import re
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
    mods = _modules_after("from plugins.registry import get_plugin, ModelSpec\n"
                          "get_plugin('keras_merge').build(ModelSpec(50, 8, None, 10))")
    assert "keras" in mods and "torch" not in mods


def test_resolving_plugins_imports_no_framework():
    """The harness process checks names and hyperparameters from the plugins' source; the framework
    is imported where the model is built (the run's own process)."""
    mods = _modules_after("from plugins.registry import get_plugin\n"
                          "print([get_plugin(n).defaults for n in ('keras_merge', 'torch_concat', 'keras_lstm')])")
    assert not {"torch", "keras", "tensorflow"} & mods


def test_source_read_declarations_equal_the_imported_ones():
    for framework in registry.FRAMEWORKS:
        registry._STATIC.pop(framework, None)
        static = registry._static_plugins(framework)  # read from the source now, whatever ran before
        registry._load_builtin(framework)  # the real @register calls
        assert static and None not in static.values()  # every built-in is resolved without an import
        for name, s in static.items():
            real = registry._REGISTRY[name]
            assert s is not real
            assert (s.framework, s.family, s.defaults, s.description, s.needs_spatial, s.module, s.choices,
                    s.bounds, s.needs_global) == (real.framework, real.family, real.defaults, real.description,
                                                  real.needs_spatial, real.module, real.choices, real.bounds,
                                                  real.needs_global)


def test_declared_choices_and_bounds_accept_the_defaults_and_refuse_their_outside():
    """A declaration cannot contradict its own default, and every declared limit is enforced."""
    from shared_data.values import Interval

    for name in registry.available_names():
        p = registry.get_plugin(name)
        assert p.check_hparams(dict(p.defaults)) == p.defaults, name
        for key, allowed in p.choices.items():
            if key in p.defaults:
                with pytest.raises(UserError, match=f"{name}.{key}=nope: expected one of"):
                    p.check_hparams({key: "nope"})
                assert p.check_hparams({key: allowed[-1]}) == {key: allowed[-1]}
        for key, text in p.bounds.items():
            low = Interval.parse(text).low
            outside = low - 1 if isinstance(p.defaults[key], int) else low - 0.5
            with pytest.raises(UserError, match=f"expected .* in {re.escape(text)}"):
                p.check_hparams({key: outside})


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


def test_third_party_plugin_through_entry_point(tmp_path):
    """A tiny package with a `capbench.plugins` entry point, installed by pip during the test (into a
    folder of its own, so the environment is left as it was), adds `torch_tiny` to a fresh process."""
    src = tmp_path / "src"
    (src / "capbench_tiny").mkdir(parents=True)
    (src / "capbench_tiny" / "__init__.py").write_text(textwrap.dedent('''
        from plugins.registry import register
        import torch

        @register("torch_tiny", family="tiny", defaults={"units": 4}, description="a tiny third-party model")
        def build(spec, units):
            return torch.nn.Linear(spec.global_dim, units)
    '''))
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "capbench-tiny"
        version = "0.1"

        [project.entry-points."capbench.plugins"]
        torch_tiny = "capbench_tiny"
    '''))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True, capture_output=True)
    code = textwrap.dedent("""
        from plugins import registry
        assert "torch_tiny" in registry.available_names()
        p = registry.get_plugin("torch_tiny")
        assert p.family == "tiny" and p.module == "capbench_tiny"
        print(p.build(registry.ModelSpec(50, 8, None, 10)).out_features)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.getcwd()])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"


def test_plugin_names_must_name_a_framework():
    with pytest.raises(ValueError, match="must start with one of"):
        registry.register("jax_thing", family="x")


def test_every_engine_puts_each_keras_plugin_on_each_installed_engine_without_importing_them():
    """`perf --plugins all`'s grid: a Keras plugin once per engine (named, TensorFlow included), a
    PyTorch plugin once; listing it imports no framework."""
    refs = registry.every_engine()
    names = registry.available_names()
    keras = [n for n in names if n.startswith("keras_")]
    assert sorted(str(r) for r in refs if r.name == "keras_merge") == \
        ["keras_merge@jax", "keras_merge@tensorflow", "keras_merge@torch"]  # the cpu extra installs all three
    assert len(refs) == len(names) + 2 * len(keras)
    assert [str(r) for r in refs if r.name.startswith("torch_")] == [n for n in names if n.startswith("torch_")]
    assert all(str(registry.PluginRef.parse(str(r))) == str(r) for r in refs)  # each parses back
    mods = _modules_after("from plugins.registry import every_engine\nprint(every_engine())")
    assert not {"torch", "keras", "tensorflow", "jax"} & mods
