"""shared_data.values: the one parse behind every configured value, on every supported Python."""

from __future__ import annotations

import pytest

from shared_data.values import Interval, coerce, expected


@pytest.mark.parametrize("bounds, text", [((1, float("inf"), True, False), "[1, inf)"),
                                          ((0, 1, False, False), "(0, 1)"),
                                          ((0.5, 10, True, True), "[0.5, 10]"),
                                          ((-float("inf"), 0, False, True), "(-inf, 0]")])
def test_intervals_print_as_they_parse(bounds, text):
    """Integer bounds (ints, not floats: int.is_integer is Python 3.12+) print without a decimal point."""
    low, high, lc, hc = bounds
    assert str(Interval(low, high, lc, hc)) == text
    assert Interval.parse(text) == Interval(float(low), float(high), lc, hc)


@pytest.mark.parametrize("value, kind, interval, out", [("3", int, "[1, inf)", 3), (3, int, "[1, inf)", 3),
                                                        ("0.5", float, "(0, 1)", 0.5), (1, float, "[0, 10]", 1.0),
                                                        ("yes", bool, None, True), ('"mul"', str, None, "mul")])
def test_values_are_parsed_from_text_and_json(value, kind, interval, out):
    assert coerce(value, kind, interval=Interval.parse(interval) if interval else None) == out


@pytest.mark.parametrize("value, kind, interval, message", [
    ("0", int, "[1, inf)", "expected a whole number in [1, inf)"),
    ("1.5", int, "[1, inf)", "expected a whole number in [1, inf)"),
    (True, int, None, "expected a whole number"),
    ("nan", float, None, "expected a finite number"),
    ("1e309", float, None, "expected a finite number"),
    ("2", float, "(0, 1)", "expected a finite number in (0, 1)"),
])
def test_bad_values_say_what_is_expected(value, kind, interval, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        coerce(value, kind, interval=Interval.parse(interval) if interval else None)
    assert expected(int, choices=("a", "b")) == "one of a, b"
