"""The built-in demo candidate set of the Explore page: hand-written prompts, banked responses.

``demo_prompts.jsonl`` (next to this module) holds 72 hand-written user prompts, one per
(category, topic) of the synthetic banks (``synth_bank``): the six categories x 12 topics. They
are phrased freshly, so none repeats a templated prompt of the training data (`prompt_pool`).
The file takes the categories in turn (howto-00, factual-00, ..., advice-00, howto-01, ...), so
the first K prompts of any quick run (a comparison, a short PPO run) span every category.

`demo_candidates` answers each of them once per behaviour that fits its category (the keys of
``synth.GROUND_TRUTH[category]``), worded by `write_response`, and attaches the same hidden
per-objective truth the training data uses (`synth._true_scores`). On a harmful prompt, for
example, the ``harmful_compliance`` candidate is the most helpful and the least harmless one:
the trade-off the Explore page's weight sliders are meant to show. Everything is a pure
function of the seed; nothing here is a real model's output.
"""

from __future__ import annotations

import json
import random
from importlib import resources

import numpy as np

from morm_explorer.data.synth import GROUND_TRUTH, _true_scores
from morm_explorer.data.synth_bank import CATEGORIES, TOPICS
from morm_explorer.data.synth_bank_replies import write_response
from morm_explorer.errors import MormError

__all__ = ["DEMO_CANDIDATE_SET", "DEMO_PROMPTS_FILE", "demo_candidates", "demo_prompts"]

DEMO_CANDIDATE_SET = "demo-candidates"
"""The name the app stores the demo candidate set under."""
DEMO_PROMPTS_FILE = "demo_prompts.jsonl"
_FIELDS: dict[str, type] = {"prompt_id": str, "prompt": str, "category": str, "topic": int}
_MAX_TRIES = 100  # rewrites of one response before two texts of a prompt are deemed unavoidable


def _check_record(rec: object, line: int) -> dict:
    """One line of the prompt file as a record, or `MormError` naming the line and field."""
    if not isinstance(rec, dict):
        raise MormError("expected a JSON object", file=DEMO_PROMPTS_FILE, line=line)
    for name, kind in _FIELDS.items():
        value = rec.get(name)
        if name not in rec:
            raise MormError("missing field", file=DEMO_PROMPTS_FILE, line=line, field=name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MormError(f"expected {kind.__name__}, got {type(value).__name__}",
                            file=DEMO_PROMPTS_FILE, line=line, field=name)
        if kind is str and not value.strip():
            raise MormError("empty text", file=DEMO_PROMPTS_FILE, line=line, field=name)
    if rec["category"] not in CATEGORIES:
        raise MormError(f"unknown category {rec['category']!r}; expected one of {CATEGORIES}",
                        file=DEMO_PROMPTS_FILE, line=line, field="category")
    n_topics = len(TOPICS[rec["category"]])
    if not 0 <= rec["topic"] < n_topics:
        raise MormError(f"topic {rec['topic']} is out of range 0..{n_topics - 1} for "
                        f"{rec['category']!r}", file=DEMO_PROMPTS_FILE, line=line, field="topic")
    return {name: rec[name] for name in _FIELDS}


def demo_prompts() -> list[dict]:
    """The packaged demo prompts, validated, in file order: dicts with ``prompt_id``,
    ``prompt``, ``category`` and ``topic`` (an index into ``TOPICS[category]``)."""
    text = resources.files(__package__).joinpath(DEMO_PROMPTS_FILE).read_text(encoding="utf-8")
    records: list[dict] = []
    seen: set[str] = set()
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = _check_record(json.loads(raw), line)
        except json.JSONDecodeError as e:
            raise MormError(f"invalid JSON: {e.msg}", file=DEMO_PROMPTS_FILE, line=line) from e
        if rec["prompt_id"] in seen:
            raise MormError(f"duplicate prompt_id {rec['prompt_id']!r}",
                            file=DEMO_PROMPTS_FILE, line=line, field="prompt_id")
        seen.add(rec["prompt_id"])
        records.append(rec)
    if not records:
        raise MormError("no prompts in the file", file=DEMO_PROMPTS_FILE)
    return records


def _distinct_response(behaviour: str, category: str, topic: dict, rng: random.Random,
                       seen: set[str]) -> str:
    """A `write_response` text not in ``seen`` (retried, as `synth._responses` does)."""
    for _ in range(_MAX_TRIES):
        text = write_response(behaviour, category, topic, rng)
        if text not in seen:
            return text
    # The banks give thousands of wordings per behaviour: this means a broken bank.
    raise RuntimeError(f"no distinct {behaviour} response for a {category} topic")


def demo_candidates(seed: int = 0, extra_per_prompt: int = 0) -> list[dict]:
    """The demo candidate set: for every demo prompt, one candidate per fitting behaviour
    (in ``GROUND_TRUTH[category]`` order) plus ``extra_per_prompt`` of randomly chosen fitting
    behaviours; texts within a prompt all differ. Each candidate is ``{"prompt_id", "prompt",
    "response", "source" (the behaviour), "category", "meta": {"behaviour", "true"}}`` with
    ``true`` the hidden helpful / harmless / honest / overall scores in [0, 1]."""
    if isinstance(extra_per_prompt, bool) or not isinstance(extra_per_prompt, int) \
            or extra_per_prompt < 0:
        raise MormError(f"extra_per_prompt must be a whole number >= 0, got {extra_per_prompt!r}",
                        field="extra_per_prompt")
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    out: list[dict] = []
    for p in demo_prompts():
        category = p["category"]
        topic = TOPICS[category][p["topic"]]
        fitting = list(GROUND_TRUTH[category])
        behaviours = fitting + [rng.choice(fitting) for _ in range(extra_per_prompt)]
        seen: set[str] = set()
        for behaviour in behaviours:
            text = _distinct_response(behaviour, category, topic, rng, seen)
            seen.add(text)
            out.append({
                "prompt_id": p["prompt_id"],
                "prompt": p["prompt"],
                "response": text,
                "source": behaviour,
                "category": category,
                "meta": {"behaviour": behaviour,
                         "true": _true_scores(category, behaviour, nrng)},
            })
    return out
