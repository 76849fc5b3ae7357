"""The plugin registry: names -> model builders, without importing a framework until needed.

A plugin is named `<framework>_<name>` (`keras_merge`, `torch_concat`) and lives in
`plugins/<framework>/<family>.py`, registered there with `@register`. Resolving a `torch_*` name
imports only the modules under `plugins/torch/`, so a run of PyTorch plugins never imports
TensorFlow, and the reverse. Third-party packages add plugins through the entry-point group
`capbench.plugins` (entry point name = plugin name, value = a module that registers it or a
`module:builder` callable).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import importlib.util
import os
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from shared_data.errors import UserError
from shared_data.text import Vocab
from shared_data.values import Interval, coerce, shown

FRAMEWORKS = ("torch", "keras")
ENTRY_POINT_GROUP = "capbench.plugins"
KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # backend -> the package it needs
DEFAULT_KERAS_BACKEND = "tensorflow"  # a Keras plugin named without @engine runs here, whatever $KERAS_BACKEND says


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about the data, and nothing about training."""

    vocab_size: int
    global_dim: int
    spatial_shape: tuple[int, int] | None  # (positions, channels) or None
    max_length: int  # tokens including <start> and <end>
    pad_id: int = Vocab.pad_id
    start_id: int = Vocab.start_id
    end_id: int = Vocab.end_id

    @classmethod
    def of(cls, ds, feats) -> ModelSpec:
        """The spec of a prepared dataset (shared_data.dataset.Dataset) with one extractor's features."""
        spatial = None if feats.spatial is None else tuple(feats.spatial.shape[1:])
        return cls(len(ds.vocab), feats.global_.shape[1], spatial, ds.max_length)


READS = ("global", "spatial")  # what a model reads: the pooled vector, or the spatial grid only


@dataclass(frozen=True)
class Family:
    """One architecture, declared once for both frameworks (plugins/families/): its hyperparameters'
    defaults, the values they accept (choices, intervals such as "[1, inf)"), what differs per
    framework ({"torch": {"defaults": ..., "choices": ...}}), what it reads, and the small sizes that
    tests build it at. A plugin file registers `family=` one of these, with its own overrides."""

    name: str
    defaults: dict
    choices: dict = field(default_factory=dict)
    bounds: dict = field(default_factory=dict)
    per_framework: dict = field(default_factory=dict)
    reads: str = "global"
    test_sizes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.reads not in READS:
            raise ValueError(f"family {self.name}: reads must be one of {READS}, got {self.reads!r}")
        unknown = set(self.test_sizes) - set(self.defaults)
        if unknown:
            raise ValueError(f"family {self.name}: test_sizes names unknown hyperparameters {sorted(unknown)}")

    def for_framework(self, framework: str) -> tuple[dict, dict, dict]:
        """(defaults, choices, bounds) of this family's plugins in `framework`."""
        extra = self.per_framework.get(framework, {})
        return ({**self.defaults, **extra.get("defaults", {})}, {**self.choices, **extra.get("choices", {})},
                {**self.bounds, **extra.get("bounds", {})})


@dataclass(frozen=True)
class Plugin:
    name: str
    framework: str
    family: str
    build_fn: Callable = field(repr=False)
    defaults: dict = field(default_factory=dict)
    description: str = ""
    needs_spatial: bool = False
    module: str = ""
    choices: dict = field(default_factory=dict)  # hyperparameter -> the values it accepts
    bounds: dict = field(default_factory=dict)  # hyperparameter -> its interval, e.g. "[1, inf)"
    needs_global: bool = True  # False: the pooled vector is never read (it is then not loaded either)
    test_sizes: dict = field(default_factory=dict)  # small hyperparameters for fast tests (timm's test sizes)

    def build(self, spec: ModelSpec, **overrides):
        return self.build_fn(spec, **{**self.defaults, **self.check_hparams(overrides)})

    def check_hparams(self, hparams: dict, where: str = "") -> dict:
        """Overrides checked against what the plugin declares: the name, the type of its default, its
        choices or interval. Returns them typed (text from the command line parsed). A cross-field
        constraint (say d_model divisible by nhead) is the model's own and fails in its run."""
        out = {}
        for key, value in hparams.items():
            if key not in self.defaults:
                raise UserError(f"{where}{self.name} has no hyperparameter {key}; "
                                f"it has: {', '.join(sorted(self.defaults)) or 'none'}")
            default = self.defaults[key]
            if default is None or isinstance(default, (list, tuple, dict)):
                out[key] = value  # no type to check against
                continue
            interval = Interval.parse(self.bounds[key]) if key in self.bounds else None
            try:
                out[key] = coerce(value, type(default), tuple(self.choices.get(key, ())) or None, interval)
            except ValueError as e:
                raise UserError(f"{where}{self.name}.{key}={shown(value)}: {e}") from None
        return out


_REGISTRY: dict[str, Plugin] = {}
_loaded: set[str] = set()


def framework_of(name: str) -> str:
    """'torch_concat' -> 'torch': a plugin's name starts with its framework."""
    return name.split("_", 1)[0]


def architecture(name: str) -> str:
    """'torch_concat' -> 'concat': what a plugin's name says after its framework (twins share it)."""
    return name.partition("_")[2]


def twin(name: str) -> str | None:
    """The same architecture in the other framework (torch_concat -> keras_concat), if it is registered."""
    framework, _, rest = name.partition("_")
    others = [f"{f}_{rest}" for f in FRAMEWORKS if f != framework]
    return next((n for n in others if n in available_names()), None)


def _make_plugin(name: str, build_fn: Callable, module: str, family: Family | str, defaults: dict | None,
                 description: str, needs_spatial: bool | None, choices: dict | None, bounds: dict | None,
                 needs_global: bool | None) -> Plugin:
    """A Plugin from a `register` call: a Family's declaration for the plugin's framework, then the
    call's own overrides."""
    framework = framework_of(name)
    if isinstance(family, Family):
        base_defaults, base_choices, base_bounds = family.for_framework(framework)
        reads_spatial, sizes, family_name = family.reads == "spatial", family.test_sizes, family.name
    else:
        base_defaults, base_choices, base_bounds, reads_spatial, sizes, family_name = {}, {}, {}, False, {}, family
    return Plugin(name, framework, family_name, build_fn, {**base_defaults, **(defaults or {})}, description,
                  reads_spatial if needs_spatial is None else needs_spatial, module,
                  {**base_choices, **(choices or {})}, {**base_bounds, **(bounds or {})},
                  (not reads_spatial) if needs_global is None else needs_global, dict(sizes))


def register(name: str, *, family: Family | str, defaults: dict | None = None, description: str = "",
             needs_spatial: bool | None = None, choices: dict | None = None, bounds: dict | None = None,
             needs_global: bool | None = None) -> Callable:
    """Decorator for a builder `fn(spec: ModelSpec, **hparams) -> model`. `family` is a Family
    (plugins/families/) whose declaration the plugin takes, `defaults`/`choices`/`bounds` overriding
    it; or a name, with everything given here (third-party plugins). `choices` and `bounds` declare
    what a hyperparameter accepts ({"fusion": ("add", "concat")}, {"units": "[1, inf)"}), so that a bad
    value is refused before any run starts."""
    if framework_of(name) not in FRAMEWORKS:
        raise ValueError(f"plugin name {name!r} must start with one of {FRAMEWORKS} and '_'")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].module != fn.__module__:
            warnings.warn(f"plugin {name} from {fn.__module__} replaces the one from {_REGISTRY[name].module}",
                          stacklevel=2)
        _REGISTRY[name] = _make_plugin(name, fn, fn.__module__, family, defaults, description, needs_spatial,
                                       choices, bounds, needs_global)
        return fn

    return wrap


@contextlib.contextmanager
def native_logs_silenced():
    """TensorFlow's C++ start-up lines (oneDNN, CPU features) go straight to file descriptor 2 whatever
    TF_CPP_MIN_LOG_LEVEL says; in the harness process, which only resolves plugins, they would bury
    the one-line error messages. Python-level errors still propagate (printed after restoring)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load_builtin(framework: str) -> None:
    if framework in _loaded:
        return
    package = importlib.import_module(f"plugins.{framework}")
    with native_logs_silenced() if framework == "keras" else contextlib.nullcontext():
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"plugins.{framework}.{info.name}")
    _loaded.add(framework)


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str) -> None:
    ep = _entry_points().get(name)
    if ep is None or name in _REGISTRY:
        return
    obj = ep.load()
    if callable(obj) and name not in _REGISTRY:  # a bare builder: register it with what we know
        register(name, family=getattr(obj, "family", "third-party"),
                 defaults=getattr(obj, "defaults", {}), description=(obj.__doc__ or "").strip().split("\n")[0],
                 needs_spatial=getattr(obj, "needs_spatial", False),
                 needs_global=getattr(obj, "needs_global", True))(obj)


def available_names() -> list[str]:
    """Every plugin name, built-in and third-party, without importing any framework."""
    names = set(_REGISTRY) | set(_entry_points())
    for framework in FRAMEWORKS:
        names.update(_static_plugins(framework))
    return sorted(names)


def get_plugin(name: str) -> Plugin:
    """Resolve one plugin. A built-in one is read from its module's source, so that the harness
    process, which only checks names and hyperparameters, imports no framework: the module (and its
    framework) is imported when the plugin is first built, in the run's own process."""
    framework = framework_of(name)
    if name not in _REGISTRY:
        _load_entry_point(name)
    if name not in _REGISTRY and framework in FRAMEWORKS:
        static = _static_plugins(framework).get(name)
        if static is not None:
            return static
        _load_builtin(framework)  # a registration the source reader cannot follow: import to know it
    if name not in _REGISTRY:
        names = available_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown plugin '{name}'{hint}; available: {', '.join(names)}")
    return _REGISTRY[name]


_STATIC: dict[str, dict[str, Plugin | None]] = {}


def _static_plugins(framework: str) -> dict[str, Plugin | None]:
    """The built-in plugins of a framework as their `@register(...)` lines declare them, evaluated from
    the source: literals, module-level names bound to literals, and dict(...) of those. A plugin whose
    declaration is anything else is left out here (its name still listed) and found by importing."""
    if framework not in _STATIC:
        found: dict[str, Plugin | None] = {}
        package = importlib.import_module(f"plugins.{framework}")
        for info in pkgutil.iter_modules(package.__path__):
            found.update(_plugins_in_source(f"plugins.{framework}.{info.name}", framework))
        _STATIC[framework] = found
    return _STATIC[framework]


def _plugins_in_source(module: str, framework: str) -> dict[str, Plugin | None]:
    with open(importlib.util.find_spec(module).origin) as f:
        tree = ast.parse(f.read())
    env: dict = {}
    for node in tree.body:  # module-level NAME = <static value>, in order
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("plugins.families"):
            declared = importlib.import_module(node.module)  # framework-free by design
            env.update({a.asname or a.name: getattr(declared, a.name) for a in node.names})
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                env[node.targets[0].id] = _static_value(node.value, env)
            except ValueError:
                env.pop(node.targets[0].id, None)  # rebound to something computed: unknown from here on
    # every register("name", ...) call anywhere names a plugin; those that are not plain decorators
    # with static arguments stay None here and are resolved by importing the module
    found: dict[str, Plugin | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args:
            if isinstance(node.args[0], ast.Constant):
                found[node.args[0].value] = None
    for node in tree.body:
        for deco in getattr(node, "decorator_list", []):
            if not (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register" and deco.args):
                continue
            if not isinstance(deco.args[0], ast.Constant):
                continue  # a computed name: found when the module is imported
            name = deco.args[0].value
            try:
                kw = {k.arg: _static_value(k.value, env) for k in deco.keywords}
            except ValueError:
                continue  # listed by name, resolved by importing its module
            found[name] = _make_plugin(name, _lazy_builder(module, name), module, kw["family"], kw.get("defaults"),
                                       kw.get("description", ""), kw.get("needs_spatial"), kw.get("choices"),
                                       kw.get("bounds"), kw.get("needs_global"))
    return found


def _static_value(node: ast.AST, env: dict):
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
        out: dict = {}
        for arg in node.args:
            out.update(_static_value(arg, env))
        for k in node.keywords:
            if k.arg is None:
                out.update(_static_value(k.value, env))
            else:
                out[k.arg] = _static_value(k.value, env)
        return out
    if isinstance(node, ast.Dict):
        return {_static_value(k, env): _static_value(v, env) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)  # ValueError for anything that is not a literal


def _lazy_builder(module: str, name: str) -> Callable:
    def build(spec: ModelSpec, **hparams):
        with native_logs_silenced() if framework_of(name) == "keras" else contextlib.nullcontext():
            importlib.import_module(module)  # registers the real builder
        return _REGISTRY[name].build_fn(spec, **hparams)

    return build


@dataclass(frozen=True)
class PluginRef:
    """A plugin as a user names it, parsed once: `keras_merge@jax` is the plugin keras_merge run on
    Keras' JAX backend; `torch_concat` has no backend part (None: the framework's own, TensorFlow for
    Keras)."""

    name: str
    keras_backend: str | None = None

    @classmethod
    def parse(cls, text: str) -> PluginRef:
        """Checked: the plugin exists, '@' only on Keras plugins, the backend is known and installed."""
        name, at, backend = str(text).strip().partition("@")
        plugin = get_plugin(name)
        if not at:
            return cls(name)
        if plugin.framework != "keras":
            raise UserError(f"{text}: '@backend' picks the Keras backend, and {name} is not a Keras plugin")
        if backend not in KERAS_BACKENDS:
            raise UserError(f"{text}: unknown Keras backend '{backend}'; use one of {', '.join(KERAS_BACKENDS)}")
        if importlib.util.find_spec(KERAS_BACKENDS[backend]) is None:
            raise UserError(f"{text}: the Keras backend '{backend}' needs the {KERAS_BACKENDS[backend]} package "
                            f"(pip install {KERAS_BACKENDS[backend]})")
        return cls(name, backend)

    @property
    def plugin(self) -> Plugin:
        return get_plugin(self.name)

    def __str__(self) -> str:
        return self.name + (f"@{self.keras_backend}" if self.keras_backend else "")


def every_engine() -> list[PluginRef]:
    """Every plugin, each Keras one once per Keras backend installed here, named explicitly
    (keras_merge@tensorflow, keras_merge@jax, keras_merge@torch): `perf --plugins all`'s engine x plugin grid."""
    backends = [b for b, package in KERAS_BACKENDS.items() if importlib.util.find_spec(package) is not None]
    return [PluginRef(name, backend) for name in available_names()
            for backend in (backends if get_plugin(name).framework == "keras" else [None])]


def parse_plugin_list(text: str) -> list[PluginRef]:
    refs = [PluginRef.parse(n) for n in text.split(",") if n.strip()]
    if not refs:
        raise UserError("--plugins is empty; give a comma-separated list, e.g. keras_merge,torch_concat")
    return refs
