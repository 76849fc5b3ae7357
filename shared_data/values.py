"""Checking one configured value against what it declares: a type, and choices or an interval.

The single parse behind run settings (benchmarks/settings.py), `--vary` values, study-file settings
and plugin hyperparameters (`--set`, study-file hparams), so that every one of them refuses the same
things with the same words: a wrong type, NaN or infinity, a number outside its interval, a string
outside its choices. Values arrive as text (command line) or as JSON values (study files).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*$")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Interval:
    """A range in interval notation: "[1, inf)" is 1 <= x, "(0, 1)" is 0 < x < 1."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        m = _INTERVAL.match(text)
        if not m:
            raise ValueError(f"interval {text!r}: write it like [1, inf) or (0, 1)")
        return cls(float(m[2]), float(m[3]), m[1] == "[", m[4] == "]")

    def __contains__(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def __str__(self) -> str:
        def num(v: float) -> str:
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return str(int(v)) if float(v).is_integer() else f"{v:g}"  # int.is_integer is Python 3.12+

        return f"{'[' if self.low_closed else '('}{num(self.low)}, {num(self.high)}{']' if self.high_closed else ')'}"


def expected(kind: type, choices: tuple | None = None, interval: Interval | None = None,
             optional: bool = False) -> str:
    """What a value must be, in words: 'a whole number in [1, inf)', 'one of fp32, bf16'."""
    if choices:
        text = "one of " + ", ".join(map(str, choices))
    elif kind is bool:
        text = "true or false"
    elif kind is int:
        text = "a whole number" + (f" in {interval}" if interval else "")
    elif kind is float:
        text = "a finite number" + (f" in {interval}" if interval else "")
    else:
        text = "text"
    return text + (" (or none)" if optional else "")


def coerce(value: object, kind: type, choices: tuple | None = None, interval: Interval | None = None,
           optional: bool = False) -> object:
    """`value` as a `kind`, checked; ValueError with the reason otherwise. Text is parsed (command
    line, `--vary`); JSON values must already have the type (an int where a float is expected is fine,
    a bool is never a number)."""
    if value is None or (isinstance(value, str) and optional and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"expected {expected(kind, choices, interval)}")
    out = _as(value, kind)
    if out is None or (isinstance(out, float) and not math.isfinite(out)):
        raise ValueError(f"expected {expected(kind, choices, interval, optional)}")
    if choices and out not in choices:
        raise ValueError(f"expected {expected(kind, choices)}")
    if interval is not None and out not in interval:
        raise ValueError(f"expected {expected(kind, None, interval, optional)}")
    return out


def _as(value: object, kind: type) -> object | None:
    """The value converted to `kind`, or None where it cannot be."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':  # JSON-quoted on a command line: "mul"
            text = text[1:-1]
        if kind is str:
            return text
        if kind is bool:
            low = text.lower()
            return True if low in _TRUE else False if low in _FALSE else None
        try:
            return int(text) if kind is int else float(text)
        except ValueError:
            return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # True is an int to Python, never a number to a user
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        return float(value) if isinstance(value, (int, float)) else None
    return value if isinstance(value, kind) else None


def shown(value: object) -> str:
    """A value as the user typed it, for messages."""
    return value if isinstance(value, str) else repr(value)
