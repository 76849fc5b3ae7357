"""RunSettings is the one definition of a run knob: the flags, the config block and the hash follow it."""

from __future__ import annotations

import pytest

from benchmarks import settings as S
from benchmarks.cli import build_parser
from benchmarks.run.plan import config_hash
from shared_data.errors import UserError


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


@pytest.mark.parametrize("command", ["run", "ablate", "study"])
def test_every_knob_is_a_flag_of_the_study_commands(command):
    assert {k.flag for k in S.knobs()} <= _flags(command)


def test_perf_takes_exactly_its_subset():
    from benchmarks.perf.measure import SETTINGS

    flags = _flags("perf")
    assert all(k.flag in flags for k in S.knobs() if k.name in SETTINGS)
    assert "--patience" not in flags and "--target" not in flags


def test_defaults_parse_back_and_flags_override_them():
    args = build_parser().parse_args(["run", "--plugins", "torch_merge", "--lr", "0.01", "--no-meteor", "--compile"])
    s = S.from_args(args)
    assert (s.lr, s.meteor, s.compile, s.batch_size) == (0.01, False, True, S.RunSettings().batch_size)
    assert S.RunSettings.from_run(s.for_run(7)).seed == 7 and "seeds" not in s.for_run(7)


def test_the_hash_follows_what_changes_the_numbers():
    base = {"plugin": "torch_merge", "hparams": {}, "extractor": "grid", "settings": S.RunSettings().for_run(0),
            "threads": None, "tensorboard": False, "label": "a"}
    same = dict(base, threads=4, tensorboard=True, label="b")
    other = dict(base, settings=S.RunSettings(lr=0.01).for_run(0))
    assert config_hash(base, "m") == config_hash(same, "m") != config_hash(other, "m")
    assert config_hash(base, "m") != config_hash(base, "another manifest")


def test_a_variant_changes_only_per_variant_knobs():
    s = S.RunSettings()
    assert s.changed({"batch_size": "32"}, "--vary").batch_size == 32
    with pytest.raises(UserError, match="seeds is the study's own setting"):
        s.changed({"seeds": 3}, "--vary")


def test_configuration_hashes_are_pinned():
    """Published reference runs are found again by their configuration hash: a refactor that changes
    how a plugin's defaults, the run settings or the hash are written would silently make every
    published run stale. If this fails on purpose (a new knob, a new default), say so, and expect the
    published studies to be rerun."""
    from plugins.registry import get_plugin

    pinned = {"torch_concat": "79d198e9839717fa", "keras_merge": "c681b67a11db8b23"}
    got = {}
    for name in pinned:
        config = {"plugin": name, "hparams": dict(get_plugin(name).defaults), "extractor": "synthnet",
                  "settings": S.RunSettings(epochs=15, patience=2).for_run(3)}
        got[name] = config_hash(config, "0" * 64)
    assert got == pinned
