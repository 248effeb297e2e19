"""The canonical form of preference data, as plain dicts (one JSONL line each).

Two record kinds:

- pairwise: ``{"prompt", "response_a", "response_b", "labels": {objective: "a"|"b"|"tie"}}``;
  an objective missing from ``labels`` is not annotated for that pair (never a tie);
- ratings: ``{"prompt", "response", "ratings": {objective: number}}``.

Both may carry ``id`` (str), ``category`` (str) and ``meta`` (a JSON object). The objectives of a
dataset are the union of the keys of its labels (or ratings).
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["pairwise", "ratings"]
KINDS: tuple[str, ...] = ("pairwise", "ratings")

LABEL_VALUES: tuple[str, ...] = ("a", "b", "tie")
PAIR_TEXT_FIELDS: tuple[str, ...] = ("prompt", "response_a", "response_b")
RATING_TEXT_FIELDS: tuple[str, ...] = ("prompt", "response")
OPTIONAL_FIELDS: tuple[str, ...] = ("id", "category", "meta")

# Objective names become metric keys, column names and CLI values: keep them plain.
OBJECTIVE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")

# A prompt or response longer than this is rejected: no real preference record needs it, and a
# reward model would truncate it anyway. Overridable per load.
MAX_TEXT_CHARS = 100_000


def record_kind(record: dict) -> Kind | None:
    """The kind a raw record looks like, from its keys (None when it looks like neither)."""
    if "labels" in record or "response_a" in record or "response_b" in record:
        return "pairwise"
    if "ratings" in record or "response" in record:
        return "ratings"
    return None


def is_valid_objective(name: object) -> bool:
    return isinstance(name, str) and bool(OBJECTIVE_RE.match(name))
