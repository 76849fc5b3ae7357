"""The backend contract is a type (backends.runner.Runner), and the layering holds.

Each framework's Runner subclasses the abstract Runner and implements all of it, with the signatures
benchmarks/ calls; a Runner missing any one abstract method cannot be built; backends/ never imports
plugins/, and shared_data/ imports no framework and none of the other layers."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import backends
from backends import runner as contract
from backends.common import OptimConfig
from plugins.registry import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[1]


def _backend(framework: str):
    pytest.importorskip(framework)
    return backends.load(framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_backend_module_fulfils_the_contract(framework):
    module = _backend(framework)
    cls = contract.check_backend(module)
    assert issubclass(cls, contract.Runner) and cls.FRAMEWORK == framework
    assert cls.__abstractmethods__ == frozenset()
    assert isinstance(module.FIXED_SHAPES, bool) and callable(module.set_threads)
    # every name benchmarks/ calls keeps the base class's signature
    for name in ("__init__", "set_threads", *contract.METHODS):
        assert callable(getattr(cls, name)), name
        assert list(inspect.signature(getattr(cls, name)).parameters) == \
            list(inspect.signature(getattr(contract.Runner, name)).parameters), name


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_runner_builds_and_answers_on_the_tiny_dataset(framework, small_dataset, tmp_path):
    from plugins.registry import ModelSpec, get_plugin
    from shared_data.batches import iterate_batches
    from shared_data.dataset import load_dataset

    module = _backend(framework)
    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    spec = ModelSpec.of(ds, feats)
    plugin = get_plugin(f"{framework}_merge")
    runner = module.Runner(plugin, spec, {"units": 16}, 0, OptimConfig())
    assert isinstance(runner, contract.Runner)
    for name in contract.ATTRIBUTES:
        assert hasattr(runner, name), name
    assert runner.spec is spec
    batch = next(iter(iterate_batches(ds, "train", feats, 8, 0, 0, pad_to_max=module.FIXED_SHAPES)))
    assert np.isfinite(runner.train_step(batch))
    assert np.isfinite(runner.eval_loss([batch]))
    runner.sync()
    g = feats.global_[:3]
    assert runner.greedy(g, None, ds.max_length).shape[0] == 3
    assert runner.beam(g, None, ds.max_length, 2, 0.6).shape[0] == 3
    assert runner.has_attention() is False
    params = runner.parameters()
    assert params["total"] == sum(params["components"].values()) >= params["trainable"] > 0
    assert Path(runner.save(tmp_path / "w")).exists() and Path(runner.save_checkpoint(tmp_path / "c")).exists()
    mb, kind = runner.peak_memory()
    assert mb > 0 and kind
    assert isinstance(runner.device_name(), str) and isinstance(runner.versions(), dict)


def _stub(name):
    if name == "__init__":
        def init(self, plugin=None, spec=None, hparams=None, seed=0, optim=None, execution=None):
            self.model, self.spec = object(), spec
        return init
    if name == "set_threads":
        return staticmethod(lambda n: None)
    return lambda self, *args, **kwargs: None


def _runner_class(without: str | None = None, **attrs) -> type:
    """A Runner subclass with every abstract member stubbed, but `without`."""
    members = {n: _stub(n) for n in contract.Runner.__abstractmethods__ if n != without}
    return type(f"Without_{without}", (contract.Runner,), {"FRAMEWORK": "none", "FIXED_SHAPES": False,
                                                            **members, **attrs})


def test_the_abstract_methods_are_the_contract():
    abstract = contract.Runner.__abstractmethods__
    # what benchmarks/ calls and is framework-specific is abstract; the rest is written once in the base
    assert {"__init__", "set_threads", "train_step", "eval_loss", "save", "load_file", "save_checkpoint",
            "load_checkpoint", "sync", "device_name", "versions"} <= abstract
    for name in contract.METHODS:
        assert callable(getattr(contract.Runner, name, None)), name
    complete = _runner_class()
    assert complete.__abstractmethods__ == frozenset() and isinstance(complete(), contract.Runner)


@pytest.mark.parametrize("missing", sorted(contract.Runner.__abstractmethods__))
def test_a_runner_missing_one_method_cannot_be_built(missing):
    incomplete = _runner_class(without=missing)
    assert incomplete.__abstractmethods__ == {missing}
    with pytest.raises(TypeError, match=missing):
        incomplete()


def test_a_runner_without_fixed_shapes_cannot_be_built():
    with pytest.raises(TypeError, match="FIXED_SHAPES"):
        _runner_class(FIXED_SHAPES=None)()


def test_check_backend_rejects_a_module_off_the_contract():
    import types

    cls = _runner_class()
    module = types.ModuleType("fake_backend")
    module.Runner, module.FIXED_SHAPES = cls, False
    with pytest.raises(TypeError, match="set_threads"):
        contract.check_backend(module)
    module.set_threads = lambda n: None  # not the Runner's own
    with pytest.raises(TypeError, match="set_threads"):
        contract.check_backend(module)
    module.set_threads = cls.set_threads
    assert contract.check_backend(module) is cls
    module.Runner = _runner_class(without="sync")
    with pytest.raises(TypeError, match="sync"):
        contract.check_backend(module)


def _imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth of the file (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add(".")  # relative: stays inside its own package
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])
    return names


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("backends", {"plugins", "benchmarks"}),
    ("plugins", {"benchmarks"}),
    ("shared_data", {"torch", "tensorflow", "keras", "jax", "benchmarks", "plugins", "backends"}),
])
def test_layers_import_nothing_above_them(layer, forbidden):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & forbidden) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# benchmarks/ by role, lowest first: each package imports only from the packages before it (settings.py
# and machine.py are below them all); cli.py, parser.py and caption.py sit on top
ROLES = ["settings", "machine", "scoring", "data", "store", "report", "run", "perf"]


def _benchmarks_imports(path: Path) -> set[str]:
    """The benchmarks/ role (settings, scoring, run, ...) of every benchmarks module a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("benchmarks"):
            parts = node.module.split(".")
            names |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")}
    return names


@pytest.mark.parametrize("role", ROLES)
def test_benchmarks_roles_import_only_the_roles_below_them(role):
    below = set(ROLES[:ROLES.index(role) + 1])
    files = [ROOT / "benchmarks" / f"{role}.py"] if (ROOT / "benchmarks" / f"{role}.py").is_file() \
        else sorted((ROOT / "benchmarks" / role).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(_benchmarks_imports(f) - below) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}
