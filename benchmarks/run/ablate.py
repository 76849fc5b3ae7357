"""`python -m benchmarks ablate PLUGIN --vary KEY=V1,V2 ...`: which change makes the difference?

A base configuration (the plugin's defaults, with any --set overrides, and the run settings given
on the command line) and its variations, all under the study's one budget and seeds. A factor is a
plugin hyperparameter (`fusion`, `hidden_layers`, `dropout_placement`, `masking`, `lstm_bias`, ...),
a run setting (any RunSettings field a variant may change: `batch_size`, `training`, `lr`, `adam_eps`,
`clip_norm`, `precision`, `compile`, `seed`, `patience`, `beam_size`, `length_alpha`) or
`keras_backend` (Keras plugins: tensorflow, jax, torch). One factor at a time by default: each listed value that differs
from the base's makes one variant; `--factorial` runs every combination. The report then compares
every variant with the base (paired bootstrap over test images, differences over seeds).
"""

from __future__ import annotations

import itertools

from benchmarks.run.plan import Variant
from benchmarks.settings import RunSettings, knobs, variant_keys
from plugins.registry import DEFAULT_KERAS_BACKEND, KERAS_BACKENDS, PluginRef
from shared_data.errors import UserError

KERAS_BACKEND = "keras_backend"  # the factor that moves a Keras plugin to another engine


def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """["fusion=add,concat", "dropout=0.2,0.5"] -> {"fusion": ["add", "concat"], "dropout": ["0.2", "0.5"]}
    (text: each factor's owner checks and types its values)."""
    factors: dict[str, list[str]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        values = [v for v in raw.split(",") if v != ""]
        if not eq or not key or not values:
            raise UserError(f"--vary {item!r}: write KEY=V1,V2, e.g. fusion=add,concat")
        if key in factors:
            raise UserError(f"--vary {key} is given twice")
        factors[key] = values
    return factors


def _label(changes: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in changes.items()) or "base"


def variants(plugin: PluginRef | str, vary: list[str], base_overrides: dict | None = None,
             factorial: bool = False, base_settings: RunSettings | None = None) -> list[Variant]:
    """The base first, then each variation, as study Variants; every value checked before anything runs."""
    ref = plugin if isinstance(plugin, PluginRef) else PluginRef.parse(plugin)
    p = ref.plugin
    settings = base_settings or RunSettings()
    hp_base = {**p.defaults, **(base_overrides or {})}
    run_base = {k: getattr(settings, k) for k in variant_keys()}
    run_base[KERAS_BACKEND] = ref.keras_backend or DEFAULT_KERAS_BACKEND
    factors: dict[str, list] = {}
    for key, raw in parse_vary(vary).items():
        if key == KERAS_BACKEND:
            if p.framework != "keras":
                raise UserError(f"cannot vary {KERAS_BACKEND}: {ref.name} is not a Keras plugin")
            factors[key] = [PluginRef.parse(f"{ref.name}@{v}").keras_backend for v in raw]
        elif key in hp_base:
            factors[key] = [p.check_hparams({key: v}, "--vary ")[key] for v in raw]
        elif key in run_base or key in (k.name for k in knobs()):  # a study-level knob: changed() says so
            factors[key] = [getattr(settings.changed({key: v}, "--vary"), key) for v in raw]
        else:
            raise UserError(f"cannot vary {key}: {ref.name} has hyperparameters {', '.join(sorted(p.defaults))}, "
                            f"the run settings are {', '.join(variant_keys())}, and Keras plugins have "
                            f"{KERAS_BACKEND} ({', '.join(KERAS_BACKENDS)})")

    def base_of(key):
        return hp_base[key] if key in hp_base else run_base[key]

    if factorial:
        combos = [dict(zip(factors, values, strict=True)) for values in itertools.product(*factors.values())]
        changes = [{k: v for k, v in c.items() if v != base_of(k)} for c in combos]
    else:
        changes = [{k: v} for k, values in factors.items() for v in values if v != base_of(k)]
    out = [_variant(ref, base_overrides or {}, {})]
    seen = {"base"}
    for change in changes:
        label = _label(change)
        if label not in seen:
            seen.add(label)
            out.append(_variant(ref, base_overrides or {}, change))
    if len(out) == 1:
        raise UserError("every --vary value equals the base configuration: nothing to compare")
    return out


def _variant(ref: PluginRef, base_overrides: dict, change: dict) -> Variant:
    hparams = dict(base_overrides)
    settings, plugin = {}, ref
    for k, v in change.items():
        if k == KERAS_BACKEND:
            plugin = PluginRef(ref.name, None if v == "tensorflow" and ref.keras_backend is None else v)
        elif k in variant_keys():
            settings[k] = v
        else:
            hparams[k] = v
    return Variant(label=_label(change), plugin=plugin, hparams=hparams, settings=settings)
