"""The types a JSON file read from disk must have, checked before anything indexes it.

A schema is a Python literal beside the code that reads the file:

    str, int, bool          a value of that type (int: not true/false)
    float                   any number (int or float, not true/false): NaN and infinities included
    FINITE                  a finite number
    {"key": spec, ...}      an object with these keys (others are allowed and not checked)
    Optional(spec)          in an object: the key may be missing or null
    Each(spec)              an object whose every value matches spec
    Each(spec, {"k": s})    ... and that has these keys, matching their own specs too
    [spec]                  a list whose every item matches spec
    any other callable      a predicate on the value

`problem(value, schema)` returns what is wrong, as the end of a one-line message ("'quality.BLEU-4'
is a string, expected a number"), or None. A small validator rather than jsonschema or pydantic:
no dependency for the core package, schemas stay readable Python next to their readers, and the
messages are the project's one-line style.
"""

from __future__ import annotations

import json
import math


class Each:
    """An object whose every value matches `spec` (a mapping from names to values), and that has the
    keys of `required`, each matching its own spec as well."""

    def __init__(self, spec: object, required: dict | None = None):
        self.spec, self.required = spec, required or {}


class Optional:
    """An object's key that may be missing or null."""

    def __init__(self, spec: object):
        self.spec = spec


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def FINITE(value: object) -> bool:  # noqa: N802 (a schema constant that happens to be a predicate)
    return is_number(value) and math.isfinite(value)


FINITE.expected = "a finite number"


def json_type(value: object) -> str:
    """A value's type in JSON's words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if is_number(value):
        return "a number"
    return {str: "a string", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


_EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
             list: "a list"}
_CHECK = {int: is_int, float: is_number}


def problem(value: object, spec: object, where: str = "") -> str | None:
    """What is wrong with `value` against `spec`, or None when nothing is."""
    if isinstance(spec, Optional):
        return None if value is None else problem(value, spec.spec, where)
    if isinstance(spec, dict | Each):
        if not isinstance(value, dict):
            return f"'{where}' is {json_type(value)}, expected an object" if where else \
                f"is {json_type(value)}, expected an object"
        items = spec.items() if isinstance(spec, dict) else \
            [*spec.required.items(), *((k, spec.spec) for k in value)]
        for key, sub in items:
            inner = f"{where}.{key}" if where else str(key)
            if isinstance(sub, Optional):
                if value.get(key) is None:
                    continue
                sub = sub.spec
            elif key not in value:
                return f"has no '{inner}'"
            found = problem(value[key], sub, inner)
            if found:
                return found
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"'{where}' is {json_type(value)}, expected a list"
        for i, item in enumerate(value):
            found = problem(item, spec[0], f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(spec, type):
        ok = _CHECK.get(spec, lambda v: isinstance(v, spec))(value)
        return None if ok else f"'{where}' is {json_type(value)}, expected {_EXPECTED[spec]}"
    if spec(value):
        return None
    expected = getattr(spec, "expected", None)
    if expected:
        return f"'{where}' is {json.dumps(value, default=str)[:40]}, expected {expected}"
    return f"'{where}' is not valid ({json.dumps(value, default=str)[:40]})"
