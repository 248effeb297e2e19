"""The shared number checks of configs and job specs: what passes, and the message and field of
what does not."""

from __future__ import annotations

import math

import pytest

from morm_explorer.checks import check_int, check_number
from morm_explorer.errors import MormError


@pytest.mark.parametrize("value, kw", [
    (0, {}), (2.5, {}), (-1e300, {}), (10**400, {"integer": True}),
    (1, {"integer": True, "low": 1, "high": 1}), (0.0, {"low": 0}),
    (1e-9, {"low": 0, "low_open": True}), (1.0, {"low": 0, "high": 1}),
])
def test_good_numbers_pass(value, kw):
    check_number("x", value, **kw)


@pytest.mark.parametrize("value, kw, message", [
    (True, {}, "x must be a finite number, got True"),
    ("1", {}, "x must be a finite number, got '1'"),
    (math.nan, {}, "x must be a finite number, got nan"),
    (-math.inf, {}, "x must be a finite number, got -inf"),
    (2.0, {"integer": True}, "x must be an integer, got 2.0"),
    (False, {"integer": True}, "x must be an integer, got False"),
    (0, {"integer": True, "low": 1, "high": 8}, "x must be in 1..8, got 0"),
    (9, {"integer": True, "low": 1, "high": 8}, "x must be in 1..8, got 9"),
    (-1, {"integer": True, "low": 0}, "x must be >= 0, got -1"),
    (0, {"integer": True, "low": 0, "low_open": True}, "x must be > 0, got 0"),
    (0.0, {"low": 0.0, "low_open": True}, "x must be > 0.0, got 0.0"),
    (1.5, {"low": 0.0, "high": 1.0}, "x must be <= 1.0, got 1.5"),
])
def test_bad_numbers_name_the_field_and_the_value(value, kw, message):
    with pytest.raises(MormError) as e:
        check_number("x", value, **kw)
    assert e.value.message == message and e.value.field == "x"


def test_check_int_is_an_integer_range():
    check_int("n", 1024, 1, 1024)
    check_int("seed", 10**9, 0)
    with pytest.raises(MormError, match="n must be in 1..1024, got 1025"):
        check_int("n", 1025, 1, 1024)
    with pytest.raises(MormError, match="seed must be >= 0, got -1"):
        check_int("seed", -1, 0)
