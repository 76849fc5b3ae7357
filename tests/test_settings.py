"""RunSettings is the one definition of a run knob: the flags, the config block and the hash follow it."""

from __future__ import annotations

import pytest

from benchmarks import settings as S
from benchmarks.cli import build_parser
from benchmarks.study import config_hash
from shared_data.errors import UserError


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


@pytest.mark.parametrize("command", ["run", "ablate", "study"])
def test_every_knob_is_a_flag_of_the_study_commands(command):
    assert {k.flag for k in S.knobs()} <= _flags(command)


def test_perf_takes_exactly_its_subset():
    from benchmarks.perf import SETTINGS

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
