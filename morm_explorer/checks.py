"""Checks of the numbers in configs and job specs, shared so that every config words the same
mistake the same way: each raises `MormError` naming the field and the bad value.

Other checks (choices, names, lists) stay with the config they belong to.
"""

from __future__ import annotations

import math
from typing import Any

from morm_explorer.errors import MormError


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> None:
    """Raise `MormError` naming ``name`` unless ``value`` is a finite number (an integer when
    ``integer``; a bool is neither) with ``low <= value <= high``, or ``low < value`` when
    ``low_open``. A bound left None is not checked."""
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        raise MormError(f"{name} must be {kind}, got {value!r}", field=name)
    if integer and low is not None and high is not None and not low_open:
        if not low <= value <= high:
            raise MormError(f"{name} must be in {low}..{high}, got {value}", field=name)
        return
    if low is not None and (value <= low if low_open else value < low):
        raise MormError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}",
                        field=name)
    if high is not None and value > high:
        raise MormError(f"{name} must be <= {high}, got {value}", field=name)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """`check_number` for an integer in ``low..high`` (``>= low`` when ``high`` is None)."""
    check_number(name, value, integer=True, low=low, high=high)
