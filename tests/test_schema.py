"""shared_data.schema: the types a JSON file from disk must have, and the one-line reasons it has not."""

from __future__ import annotations

import pytest

from shared_data.schema import FINITE, Each, Optional, problem

SPEC = {"status": str, "n": int, "x": float, "ok": bool, "q": Each(float, {"BLEU-4": FINITE}),
        "tags": [str], "env": Optional({"cpu": str}), "folder": lambda f: isinstance(f, str) and "/" not in f}
GOOD = {"status": "ok", "n": 3, "x": 0.5, "ok": True, "q": {"BLEU-4": 0.2, "other": float("nan")}, "tags": ["a"],
        "folder": "a-s0", "extra": "not checked"}


def test_a_matching_value_has_no_problem():
    assert problem(GOOD, SPEC) is None
    assert problem({**GOOD, "env": None}, SPEC) is None
    assert problem({**GOOD, "n": 2**60, "x": 3}, SPEC) is None  # an int is a number too


@pytest.mark.parametrize("change, message", [
    ({"status": 7}, "'status' is a number, expected a string"),
    ({"n": True}, "'n' is true/false, expected an integer"),
    ({"n": 1.5}, "'n' is a number, expected an integer"),
    ({"x": "1"}, "'x' is a string, expected a number"),
    ({"ok": 1}, "'ok' is a number, expected true/false"),
    ({"q": [1]}, "'q' is a list, expected an object"),
    ({"q": {"other": 1.0}}, "has no 'q.BLEU-4'"),
    ({"q": {"BLEU-4": float("inf")}}, "'q.BLEU-4' is Infinity, expected a finite number"),
    ({"q": {"BLEU-4": 0.1, "other": "x"}}, "'q.other' is a string, expected a number"),
    ({"tags": ["a", None]}, "'tags[1]' is null, expected a string"),
    ({"env": {"cpu": 1}}, "'env.cpu' is a number, expected a string"),
    ({"folder": "../x"}, "'folder' is not valid (\"../x\")"),
])
def test_each_mismatch_is_named_by_its_path(change, message):
    assert problem({**GOOD, **change}, SPEC) == message


def test_a_missing_key_and_a_wrong_top_level_type():
    assert problem({k: v for k, v in GOOD.items() if k != "n"}, SPEC) == "has no 'n'"
    assert problem([GOOD], SPEC) == "is a list, expected an object"
