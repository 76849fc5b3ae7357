"""`python -m benchmarks ablate PLUGIN --vary KEY=V1,V2 ...`: which change makes the difference?

A base configuration (the plugin's defaults, with any --set overrides, and the run settings given
on the command line) and its variations, all under the study's one budget and seeds. A factor is a
plugin hyperparameter (`fusion`, `hidden_layers`, `dropout_placement`, `masking`, `lstm_bias`, ...),
a run setting (`batch_size`, `training`, `lr`, `adam_eps`, `clip_norm`, `precision`, `compile`) or
`keras_backend` (Keras plugins: tensorflow, jax, torch). One factor at a time by default: each listed value that differs
from the base's makes one variant; `--factorial` runs every combination. The report then compares
every variant with the base (paired bootstrap over test images, differences over seeds).
"""

from __future__ import annotations

import itertools
import json

from plugins.registry import get_plugin
from shared_data.errors import UserError

from .study import SETTINGS, Variant

RUN_DEFAULTS = {"batch_size": 64, "training": "sequence", "lr": 1e-3, "adam_eps": 1e-8, "clip_norm": 5.0,
                "precision": "fp32", "compile": False, "keras_backend": "tensorflow"}


def parse_vary(items: list[str]) -> dict[str, list]:
    """["fusion=add,concat", "dropout=0.2,0.5"] -> {"fusion": ["add", "concat"], "dropout": [0.2, 0.5]}."""
    factors: dict[str, list] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        values = [v for v in raw.split(",") if v != ""]
        if not eq or not key or not values:
            raise UserError(f"--vary {item!r}: write KEY=V1,V2, e.g. fusion=add,concat")
        if key in factors:
            raise UserError(f"--vary {key} is given twice")
        parsed = []
        for v in values:
            try:
                parsed.append(json.loads(v))
            except json.JSONDecodeError:
                parsed.append(v)
        factors[key] = parsed
    return factors


def _label(changes: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in changes.items()) or "base"


def variants(plugin_name: str, vary: list[str], base_overrides: dict | None = None,
             factorial: bool = False, base_settings: dict | None = None) -> list[Variant]:
    """The base first, then each variation, as study Variants."""
    plugin = get_plugin(plugin_name)
    factors = parse_vary(vary)
    hp_base = {**plugin.defaults, **(base_overrides or {})}
    run_base = {**RUN_DEFAULTS, **(base_settings or {})}
    for key in factors:
        if key not in hp_base and key not in run_base:
            raise UserError(f"cannot vary {key}: {plugin_name} has hyperparameters {', '.join(sorted(plugin.defaults))}"
                            f" and the run settings are {', '.join(RUN_DEFAULTS)}")
        if key == "keras_backend" and plugin.framework != "keras":
            raise UserError(f"cannot vary keras_backend: {plugin_name} is not a Keras plugin")

    def base_of(key):
        return hp_base[key] if key in hp_base else run_base[key]

    if factorial:
        combos = [dict(zip(factors, values, strict=True)) for values in itertools.product(*factors.values())]
        changes = [{k: v for k, v in c.items() if v != base_of(k)} for c in combos]
    else:
        changes = [{k: v} for k, values in factors.items() for v in values if v != base_of(k)]
    out = [_variant(plugin_name, base_overrides or {}, {})]
    seen = {"base"}
    for change in changes:
        label = _label(change)
        if label not in seen:
            seen.add(label)
            out.append(_variant(plugin_name, base_overrides or {}, change))
    if len(out) == 1:
        raise UserError("every --vary value equals the base configuration: nothing to compare")
    return out


def _variant(plugin_name: str, base_overrides: dict, change: dict) -> Variant:
    hparams = dict(base_overrides)
    settings, name = {}, plugin_name
    for k, v in change.items():
        if k == "keras_backend":
            name = f"{plugin_name}@{v}"
        elif k in SETTINGS:
            settings[k] = v
        else:
            hparams[k] = v
    return Variant(label=_label(change), plugin=name, hparams=hparams, settings=settings)
