"""RunSettings: the one definition of every run-level knob.

Each field carries its type (the annotation), default, interval or choices and help text. From it
come the command-line flags of run, ablate, study and perf, the keys a study file's "settings" and
`--vary` may change, the settings block of every run's config.json (and so its configuration hash),
and the settings line of the report. It validates when it is made, in the study process, before any
worker starts: a wrong type, NaN, a number outside its interval or an unknown choice is one line
naming the flag or key and what it accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field

from backends.common import PRECISIONS, Execution, OptimConfig
from shared_data.errors import UserError
from shared_data.values import Interval, coerce, expected, shown

DEFAULT_EPOCHS = 3  # the budget when none is given
TRAINING_MODES = ("sequence", "prefix")
BUDGET_KEYS = ("epochs", "steps", "time_budget", "target")
TARGETS = {"val_bleu4": "higher", "val_loss": "lower"}  # --target metric -> the direction that meets it
DECODINGS = ("greedy", "beam", "sample")


def knob(default, help: str, *, choices: tuple | None = None, interval: str | None = None, flag: str | None = None,
         per_variant: bool = True, per_run: bool = True, metavar: str | None = None, if_changed: bool = False):
    """A RunSettings field. per_variant: a study variant or `--vary` may change it (budgets and seeds are
    the study's: identical for every row). per_run: it is part of a run's configuration (and hash);
    `seeds` is not, it only says how many runs there are. if_changed: a knob added after runs were
    published, in a run's configuration only when it differs from its default, so that every run
    made before it keeps its hash."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "metavar": metavar,
                                            "interval": Interval.parse(interval) if interval else None,
                                            "per_variant": per_variant, "per_run": per_run,
                                            "if_changed": if_changed})


@dataclass(frozen=True)
class RunSettings:
    epochs: int | None = knob(None, f"budget in epochs (default {DEFAULT_EPOCHS} when no budget is given)",
                              interval="[1, inf)", per_variant=False)
    steps: int | None = knob(None, "budget in optimizer steps", interval="[1, inf)", per_variant=False)
    time_budget: float | None = knob(None, "budget in seconds of training (evaluation excluded)",
                                     interval="(0, inf)", per_variant=False)
    target: str | None = knob(None, "time to target: stop after the first epoch whose val_bleu4 (greedy) reaches "
                              "VALUE, or whose val_loss falls to it; needs a cap, --epochs or --time-budget, and a "
                              "run that hits the cap first ends 'not reached'", per_variant=False,
                              metavar="val_bleu4=X|val_loss=X")
    batch_size: int = knob(64, "captions per batch", interval="[1, inf)")
    training: str = knob("sequence", "sequence: whole-caption teacher forcing; prefix: the Keras recipe's "
                         "one-sample-per-prefix expansion, same loss at many times the cost", choices=TRAINING_MODES)
    lr: float = knob(OptimConfig.lr, "Adam learning rate", interval="(0, inf)")
    adam_eps: float = knob(OptimConfig.eps, "Adam epsilon (PyTorch's default; Keras' own is 1e-7)", interval="(0, 1)")
    clip_norm: float = knob(OptimConfig.clip_norm, "clip the global gradient norm to this", interval="(0, inf)")
    precision: str = knob("fp32", "fp32, or bf16 mixed precision (torch.autocast / Keras' mixed_bfloat16 policy)",
                          choices=PRECISIONS)
    compile: bool = knob(False, "compile the model: torch.compile for PyTorch plugins, jit_compile=True (XLA) for "
                         "Keras ones; the first step's time then includes the compilation")
    seed: int = knob(0, "first seed", interval="[0, 4294967295]")
    seeds: int = knob(1, "runs per configuration (seeds --seed, --seed+1, ...); quality as mean ± 95% CI",
                      interval="[1, 1000]", per_variant=False, per_run=False)
    patience: int | None = knob(None, "early stopping: epochs without a better val BLEU-4", interval="[1, inf)")
    beam_size: int = knob(3, "beam width of the test-set beam search", interval="[1, 100]")
    length_alpha: float = knob(0.6, "GNMT length normalisation of the beam search (0 = none)", interval="[0, 10]")
    decoding: str = knob("greedy", "how the test split is decoded for the headline scores (the beam column is "
                         "always beam search; validation is always greedy)", choices=DECODINGS, if_changed=True)
    groups: int = knob(1, "diverse beam search: the beam splits into this many groups (1: plain beam search)",
                       interval="[1, 100]", if_changed=True)
    diversity: float = knob(0.5, "diverse beam search: a word's penalty per earlier group that chose it at the "
                            "same step", interval="[0, 1000]", if_changed=True)
    temperature: float = knob(1.0, "sampling: divide the logits by this", interval="(0, 100]", if_changed=True)
    top_k: int = knob(0, "sampling: only the k likeliest words (0: all)", interval="[0, 100000]", if_changed=True)
    top_p: float = knob(1.0, "sampling: only the nucleus, the fewest likeliest words whose probability reaches p",
                        interval="(0, 1]", if_changed=True)
    block_trigrams: bool = knob(False, "beam search and sampling: never repeat a trigram within a caption",
                                if_changed=True)
    captions_per_image: int = knob(1, "sampling or beam search: captions per test image (greedy decoding has "
                                   "one); the first is scored, all of them give mBLEU-4 (how alike one "
                                   "image's captions are)",
                                   interval="[1, 100]", if_changed=True)
    meteor: bool = knob(True, "skip METEOR (saves the Java start-up)", flag="--no-meteor", per_variant=False)

    def __post_init__(self):
        for k in knobs():
            checked = k.check(getattr(self, k.name), k.flag)
            object.__setattr__(self, k.name, checked)
        last = self.seed + self.seeds - 1
        if last not in knob_named("seed").interval:
            raise UserError(f"--seed {self.seed} --seeds {self.seeds}: the last seed, {last}, is past "
                            f"{knob_named('seed').interval}; start lower")
        if self.beam_size % self.groups:
            raise UserError(f"--groups {self.groups}: the beam ({self.beam_size}) must split into equal groups; "
                            "give a --beam-size divisible by it")
        if self.decoding == "beam" and self.captions_per_image > self.beam_size:
            raise UserError(f"--captions-per-image {self.captions_per_image}: beam search keeps {self.beam_size} "
                            "hypotheses an image; give a --beam-size at least as large")
        if self.target is not None:
            parse_target(self.target)
            if not (self.epochs or self.time_budget or self.steps):
                raise UserError(f"--target {self.target}: give a cap too (--epochs N or --time-budget SECONDS), so "
                                "that a run that never reaches it ends, as 'not reached'")

    # ------------------------------------------------------------------------- derived values
    def budget(self) -> dict:
        """Epochs, steps, seconds of training (any combination: the first reached ends the run) and a
        target (time to target, capped by the others)."""
        if not any(getattr(self, k) for k in BUDGET_KEYS):
            return {"epochs": DEFAULT_EPOCHS, "steps": None, "time_budget": None, "target": None}
        return {k: getattr(self, k) for k in BUDGET_KEYS}

    def optim(self) -> OptimConfig:
        return OptimConfig(lr=self.lr, eps=self.adam_eps, clip_norm=self.clip_norm)

    def execution(self) -> Execution:
        return Execution(self.precision, self.compile)

    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def for_run(self, seed: int) -> dict:
        """A run's settings block (config.json): every per-run knob, with the run's own seed."""
        return {k.name: (seed if k.name == "seed" else getattr(self, k.name)) for k in knobs()
                if k.per_run and not (k.if_changed and getattr(self, k.name) == k.default)}

    @classmethod
    def from_run(cls, block: dict) -> RunSettings:
        return cls(**block)

    def changed(self, changes: dict, where: str, per_variant: bool = True) -> RunSettings:
        """These settings with `changes` ({key: value as text or JSON}) applied, each checked; `where`
        names the source in messages ('--vary', "study.json, variant 'x', settings")."""
        known = {k.name: k for k in knobs()}
        out = {}
        for key, value in changes.items():
            k = known.get(key)
            if k is not None and per_variant and not k.per_variant:
                raise UserError(f"{where}: {key} is the study's own setting, the same for every row; give it as "
                                f"{k.flag} instead")
            if k is None:
                allowed = [n for n, kk in known.items() if kk.per_variant or not per_variant]
                raise UserError(f"{where}: unknown run setting '{key}'; settings are {', '.join(allowed)}")
            out[key] = k.check(value, f"{where} {key}=" if where.startswith("--") else f"{where}.{key}")
        return dataclasses.replace(self, **out)


@dataclass(frozen=True)
class Knob:
    name: str
    kind: type
    optional: bool
    default: object
    help: str
    flag: str
    choices: tuple | None
    interval: Interval | None
    per_variant: bool
    per_run: bool
    metavar: str | None = None
    if_changed: bool = False

    def check(self, value, where: str):
        try:
            return coerce(value, self.kind, self.choices, self.interval, self.optional)
        except ValueError as e:
            sep = "" if where.endswith("=") else " "
            raise UserError(f"{where}{sep}{shown(value)}: {e}") from None

    def accepts(self) -> str:
        return expected(self.kind, self.choices, self.interval, self.optional)


_KNOBS: list[Knob] = []


def knobs() -> list[Knob]:
    """RunSettings' fields as Knobs, in declaration order."""
    if not _KNOBS:
        hints = typing.get_type_hints(RunSettings)
        for f in dataclasses.fields(RunSettings):
            kind, optional = hints[f.name], False
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if args:
                kind, optional = args[0], True
            m = f.metadata
            _KNOBS.append(Knob(f.name, kind, optional, f.default, m["help"],
                               m["flag"] or "--" + f.name.replace("_", "-"), m["choices"], m["interval"],
                               m["per_variant"], m["per_run"], m["metavar"], m["if_changed"]))
    return _KNOBS


def knob_named(name: str) -> Knob:
    return next(k for k in knobs() if k.name == name)


def variant_keys() -> list[str]:
    return [k.name for k in knobs() if k.per_variant]


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser, names: typing.Iterable[str] | None = None) -> None:
    """One flag per knob (all, or `names`), parsed by RunSettings itself: argparse only collects text."""
    wanted = set(names) if names is not None else None
    for k in knobs():
        if wanted is not None and k.name not in wanted:
            continue
        if k.kind is bool:
            p.add_argument(k.flag, dest=k.name, action="store_false" if k.default else "store_true", default=None,
                           help=k.help.replace("%", "%%"))
            continue
        default = "" if k.default is None else f" (default {k.default})"
        metavar = k.metavar or ("|".join(k.choices) if k.choices else ("N" if k.kind is int else "X"))
        p.add_argument(k.flag, dest=k.name, default=None, metavar=metavar,
                       help=f"{k.help}{default}; {k.accepts()}".replace("%", "%%"))


def from_args(args: argparse.Namespace, names: typing.Iterable[str] | None = None,
              defaults: dict | None = None) -> RunSettings:
    """RunSettings from the flags `add_arguments` made; flags not given keep `defaults` (checked
    settings, e.g. a study file's own budget) or RunSettings' defaults. A budget flag replaces the
    defaults' whole budget: `--steps 300` on a study whose file says 20 epochs trains 300 steps."""
    wanted = set(names) if names is not None else None
    given = {}
    for k in knobs():
        if wanted is not None and k.name not in wanted:
            continue
        raw = getattr(args, k.name, None)
        if raw is not None:
            given[k.name] = k.check(raw, k.flag)
    base = dict(defaults or {})
    if any(k in given for k in BUDGET_KEYS):
        base = {k: v for k, v in base.items() if k not in BUDGET_KEYS}
    return RunSettings(**{**base, **given})


def parse_target(text: str) -> tuple[str, float]:
    """'val_bleu4=0.25' -> ('val_bleu4', 0.25); the metric one of TARGETS, the value finite."""
    metric, eq, raw = str(text).partition("=")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not eq or metric not in TARGETS:
        raise UserError(f"--target {text}: write METRIC=VALUE with METRIC one of {', '.join(TARGETS)}, "
                        "e.g. --target val_bleu4=0.25")
    if not math.isfinite(value):
        raise UserError(f"--target {text}: the value must be a finite number, e.g. --target {metric}=0.25")
    return metric, value


def target_met(target: str, val_bleu4: float, val_loss: float) -> bool:
    metric, value = parse_target(target)
    return val_bleu4 >= value if metric == "val_bleu4" else val_loss <= value


def describe(values: dict) -> str:
    """Settings as the report prints them: 'batch_size 64, lr 0.001, ...' (None left out)."""
    return ", ".join(f"{k} {_fmt(v)}" for k, v in values.items() if v is not None)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:g}"
    return str(v)
