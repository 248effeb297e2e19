"""The built-in demo preference data: pairwise records on helpful / harmless / honest / overall.

`generate` builds canonical pairwise records from the prompt and wording banks
(``synth_bank*``); `write_synth` writes them as JSONL; `describe` summarises a generated set,
including the Bayes ceiling of its labels. Everything is a pure function of the seed.

How a record comes about:

1. Prompts: 70 per category by default, drawn from the 84 distinct phrasings x topics of each
   of the six categories (howto, factual, harmful, dual_use, uncertain, advice).
2. Responses: one per behaviour that fits the category, plus one more of a random behaviour
   (so a few same-behaviour pairs exist), each worded from the banks so no fixed phrase gives
   its behaviour away. Texts within a prompt are all different.
3. Hidden truth: each response scores base(category, behaviour) + N(0, JITTER_SD) per
   objective, clipped to [0, 1]. ``overall`` is the hidden weighting OVERALL_WEIGHTS of the
   three (0.6 helpful, 0.25 honest, 0.15 harmless): it leans on helpfulness, so a single
   "overall" reward model under-rates harmlessness, which is what the demo shows.
4. Labels: per pair and objective, simulated annotators leave the objective unlabelled with
   probability MISSING_P (never for overall); otherwise with d = s_a - s_b they say "tie" when
   |d| < TIE_BAND (or at random, EXTRA_TIE_P), else "a" with probability sigmoid(d / NOISE_T)
   (Bradley-Terry noise). Within a category, two base scores of the same objective are
   either equal or at least 0.15 apart, and the jitter is small: so almost every decided
   label follows a real behaviour difference, and the Bayes ceiling (`bayes_ceiling`) and
   the behaviour ceiling (`behaviour_ceiling`) stay above 0.93 per objective.

Base scores (helpful, harmless, honest; overall is derived):

    category   behaviour               helpful harmless   honest  overall
    howto      detailed_help             0.900    0.900    0.900    0.900
    howto      terse_help                0.600    0.900    0.900    0.720
    howto      honest_uncertainty        0.400    0.900    0.900    0.600
    howto      confident_fabrication     0.750    0.550    0.200    0.583
    howto      flat_refusal              0.100    0.900    0.900    0.420
    howto      off_topic                 0.100    0.900    0.500    0.320
    factual    detailed_help             0.900    0.900    0.900    0.900
    factual    terse_help                0.600    0.900    0.900    0.720
    factual    honest_uncertainty        0.400    0.900    0.900    0.600
    factual    confident_fabrication     0.750    0.700    0.050    0.568
    factual    flat_refusal              0.100    0.900    0.900    0.420
    factual    off_topic                 0.100    0.900    0.500    0.320
    harmful    harmful_compliance        0.900    0.050    0.900    0.772
    harmful    terse_help                0.600    0.250    0.900    0.623
    harmful    redirect_refusal          0.400    0.900    0.900    0.600
    harmful    flat_refusal              0.100    0.900    0.900    0.420
    harmful    off_topic                 0.100    0.900    0.500    0.320
    dual_use   detailed_help             0.900    0.700    0.900    0.870
    dual_use   harmful_compliance        0.750    0.200    0.900    0.705
    dual_use   terse_help                0.600    0.500    0.900    0.660
    dual_use   redirect_refusal          0.400    0.900    0.900    0.600
    dual_use   flat_refusal              0.100    0.900    0.900    0.420
    dual_use   off_topic                 0.100    0.900    0.500    0.320
    uncertain  honest_uncertainty        0.600    0.900    0.900    0.720
    uncertain  confident_fabrication     0.750    0.700    0.050    0.568
    uncertain  terse_help                0.400    0.900    0.900    0.600
    uncertain  flat_refusal              0.100    0.900    0.900    0.420
    uncertain  off_topic                 0.100    0.900    0.500    0.320
    advice     detailed_help             0.900    0.900    0.900    0.900
    advice     terse_help                0.600    0.900    0.900    0.720
    advice     honest_uncertainty        0.400    0.900    0.900    0.600
    advice     confident_fabrication     0.750    0.600    0.150    0.578
    advice     flat_refusal              0.100    0.900    0.900    0.420
    advice     off_topic                 0.100    0.900    0.500    0.320
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter

import numpy as np

from morm_explorer.data.synth_bank import CATEGORIES, TOPICS, prompt_pool
from morm_explorer.data.synth_bank_replies import BEHAVIOURS, write_response
from morm_explorer.errors import MormError
from morm_explorer.workspace import atomic_write_jsonl

__all__ = [
    "ALL_OBJECTIVES", "BEHAVIOURS", "CATEGORIES", "GROUND_TRUTH", "OBJECTIVES", "OVERALL",
    "OVERALL_WEIGHTS", "bayes_ceiling", "behaviour_ceiling", "describe", "generate",
    "ground_truth_table", "write_synth",
]

OBJECTIVES: tuple[str, ...] = ("helpful", "harmless", "honest")
OVERALL = "overall"
ALL_OBJECTIVES: tuple[str, ...] = (*OBJECTIVES, OVERALL)
OVERALL_WEIGHTS: dict[str, float] = {"helpful": 0.6, "honest": 0.25, "harmless": 0.15}

# Jitter, tie band and temperature are kept small together: a decided label then almost always
# reflects a behaviour difference a reward model can read from the text, not per-response
# noise it cannot, which keeps both ceilings above 0.93.
JITTER_SD = 0.02  # per-response spread around the base score
TIE_BAND = 0.05  # annotators call differences smaller than this a tie
EXTRA_TIE_P = 0.03  # ... and say "tie" now and then regardless
NOISE_T = 0.05  # Bradley-Terry temperature: P("a") = sigmoid(d / NOISE_T)
MISSING_P = 0.12  # chance an objective is left unlabelled on a pair
SAME_BEHAVIOUR_P = 0.1  # chance a pair slot goes to two responses of the same behaviour

_H, _S, _O = "helpful", "harmless", "honest"
# (helpful, harmless, honest) per behaviour that fits the category.
_BASE: dict[str, dict[str, tuple[float, float, float]]] = {
    "howto": {
        "detailed_help": (0.90, 0.90, 0.90), "terse_help": (0.60, 0.90, 0.90),
        "honest_uncertainty": (0.40, 0.90, 0.90), "confident_fabrication": (0.75, 0.55, 0.20),
        "flat_refusal": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50),
    },
    "factual": {
        "detailed_help": (0.90, 0.90, 0.90), "terse_help": (0.60, 0.90, 0.90),
        "honest_uncertainty": (0.40, 0.90, 0.90), "confident_fabrication": (0.75, 0.70, 0.05),
        "flat_refusal": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50),
    },
    "harmful": {
        "harmful_compliance": (0.90, 0.05, 0.90), "terse_help": (0.60, 0.25, 0.90),
        "redirect_refusal": (0.40, 0.90, 0.90), "flat_refusal": (0.10, 0.90, 0.90),
        "off_topic": (0.10, 0.90, 0.50),
    },
    "dual_use": {
        "detailed_help": (0.90, 0.70, 0.90), "harmful_compliance": (0.75, 0.20, 0.90),
        "terse_help": (0.60, 0.50, 0.90), "redirect_refusal": (0.40, 0.90, 0.90),
        "flat_refusal": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50),
    },
    "uncertain": {
        "honest_uncertainty": (0.60, 0.90, 0.90), "confident_fabrication": (0.75, 0.70, 0.05),
        "terse_help": (0.40, 0.90, 0.90), "flat_refusal": (0.10, 0.90, 0.90),
        "off_topic": (0.10, 0.90, 0.50),
    },
    "advice": {
        "detailed_help": (0.90, 0.90, 0.90), "terse_help": (0.60, 0.90, 0.90),
        "honest_uncertainty": (0.40, 0.90, 0.90), "confident_fabrication": (0.75, 0.60, 0.15),
        "flat_refusal": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50),
    },
}


def _overall(scores: dict[str, float]) -> float:
    return sum(w * scores[k] for k, w in OVERALL_WEIGHTS.items())


def _truth_table() -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for category, rows in _BASE.items():
        table[category] = {}
        for behaviour, (h, s, o) in rows.items():
            scores = {_H: h, _S: s, _O: o}
            table[category][behaviour] = {**scores, OVERALL: round(_overall(scores), 4)}
    return table


GROUND_TRUTH: dict[str, dict[str, dict[str, float]]] = _truth_table()
"""Base score per category -> behaviour -> objective, ``overall`` included."""


def ground_truth_table() -> str:
    """GROUND_TRUTH as a fixed-width text table (the one printed in this module's docstring)."""
    head = f"    {'category':<10} {'behaviour':<22}" + "".join(f"{o:>9}" for o in ALL_OBJECTIVES)
    lines = [head]
    for category, rows in GROUND_TRUTH.items():
        for behaviour, scores in rows.items():
            cells = "".join(f"{scores[o]:>9.3f}" for o in ALL_OBJECTIVES)
            lines.append(f"    {category:<10} {behaviour:<22}{cells}")
    return "\n".join(lines)



def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _choose_prompts(n_prompts: int, rng: random.Random) -> list[tuple[str, int, int, str]]:
    """(category, topic index, phrasing index, text) for n_prompts prompts, spread evenly over
    the categories and shuffled."""
    chosen: list[tuple[str, int, int, str]] = []
    for i, category in enumerate(CATEGORIES):
        quota = n_prompts // len(CATEGORIES) + (1 if i < n_prompts % len(CATEGORIES) else 0)
        pool = prompt_pool(category)
        if quota > len(pool):
            raise MormError(
                f"n_prompts={n_prompts} needs {quota} distinct '{category}' prompts; the bank "
                f"has {len(pool)} (at most {len(pool) * len(CATEGORIES)} prompts in all)",
                field="n_prompts")
        chosen += [(category, *p) for p in rng.sample(pool, quota)]
    rng.shuffle(chosen)
    return chosen


def _true_scores(category: str, behaviour: str, rng: np.random.Generator) -> dict[str, float]:
    base = GROUND_TRUTH[category][behaviour]
    scores = {o: round(float(np.clip(base[o] + rng.normal(0.0, JITTER_SD), 0.0, 1.0)), 4)
              for o in OBJECTIVES}
    scores[OVERALL] = round(_overall(scores), 4)
    return scores


def _responses(category: str, topic: dict, rng: random.Random,
               nrng: np.random.Generator) -> list[tuple[str, str, dict[str, float]]]:
    """(behaviour, text, true scores) for every response to one prompt; texts all differ."""
    fitting = list(GROUND_TRUTH[category])
    behaviours = fitting + [rng.choice(fitting)]
    out: list[tuple[str, str, dict[str, float]]] = []
    seen: set[str] = set()
    for behaviour in behaviours:
        for _ in range(100):
            text = write_response(behaviour, category, topic, rng)
            if text not in seen:
                break
        else:  # the banks give thousands of wordings per behaviour: this means a broken bank
            raise RuntimeError(f"no distinct {behaviour} response for {category} topic")
        seen.add(text)
        out.append((behaviour, text, _true_scores(category, behaviour, nrng)))
    return out


def _choose_pairs(behaviours: list[str], k: int, rng: random.Random) -> list[tuple[int, int]]:
    """k distinct index pairs, mostly of different behaviours, each in random (a, b) order."""
    idx = [(i, j) for i in range(len(behaviours)) for j in range(i + 1, len(behaviours))]
    same = [p for p in idx if behaviours[p[0]] == behaviours[p[1]]]
    diff = [p for p in idx if behaviours[p[0]] != behaviours[p[1]]]
    rng.shuffle(same)
    rng.shuffle(diff)
    n_same = min(len(same), sum(rng.random() < SAME_BEHAVIOUR_P for _ in range(k)))
    n_same = max(n_same, k - len(diff))  # too few mixed pairs: fill up with same ones
    pairs = same[:n_same] + diff[: k - n_same]
    rng.shuffle(pairs)
    return [(i, j) if rng.random() < 0.5 else (j, i) for i, j in pairs]


def _label(d: float, rng: np.random.Generator) -> str:
    if abs(d) < TIE_BAND or rng.random() < EXTRA_TIE_P:
        return "tie"
    return "a" if rng.random() < _sigmoid(d / NOISE_T) else "b"


def _labels(true_a: dict[str, float], true_b: dict[str, float],
            rng: np.random.Generator) -> dict[str, str]:
    labels: dict[str, str] = {}
    for obj in ALL_OBJECTIVES:
        # Draw for every objective, overall included, so the random stream has a fixed shape.
        missing = rng.random() < MISSING_P
        if missing and obj != OVERALL:
            continue
        labels[obj] = _label(true_a[obj] - true_b[obj], rng)
    return labels


def generate(seed: int = 0, n_prompts: int = 420, pairs_per_prompt: int = 6) -> list[dict]:
    """The demo data set: ``n_prompts`` distinct prompts with ``pairs_per_prompt`` labelled
    pairs each (fewer if a prompt has fewer distinct pairs), as canonical pairwise records."""
    if n_prompts < 1 or pairs_per_prompt < 1:
        raise MormError("n_prompts and pairs_per_prompt must be at least 1")
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    records: list[dict] = []
    for category, t, f, prompt in _choose_prompts(n_prompts, rng):
        responses = _responses(category, TOPICS[category][t], rng, nrng)
        for i, j in _choose_pairs([r[0] for r in responses], pairs_per_prompt, rng):
            (beh_a, text_a, true_a), (beh_b, text_b, true_b) = responses[i], responses[j]
            records.append({
                "id": f"synth-{seed}-{len(records)}",
                "prompt": prompt,
                "response_a": text_a,
                "response_b": text_b,
                "labels": _labels(true_a, true_b, nrng),
                "category": category,
                "meta": {"behaviour_a": beh_a, "behaviour_b": beh_b, "true_a": true_a,
                         "true_b": true_b, "prompt_id": f"{category}-t{t:02d}-f{f}",
                         "topic_id": f"{category}-t{t:02d}"},
            })
    return records


def write_synth(path: str | os.PathLike, seed: int = 0, **kw: int) -> int:
    """Write ``generate(seed, **kw)`` to ``path`` as UTF-8 JSONL, atomically; returns the
    number of records written."""
    return atomic_write_jsonl(path, generate(seed=seed, **kw))


def _decidable(records: list[dict], obj: str) -> list[tuple[float, float]]:
    """(true difference, base-score difference) of every pair whose ``obj`` label is present
    and whose true difference is outside the tie band, i.e. could be labelled "a" or "b"."""
    out = []
    for rec in records:
        meta = rec.get("meta") or {}
        if obj not in rec.get("labels", {}) or "true_a" not in meta or "true_b" not in meta:
            continue
        d = meta["true_a"][obj] - meta["true_b"][obj]
        if abs(d) >= TIE_BAND:
            cat = GROUND_TRUTH.get(rec.get("category", ""), {})
            base_a = cat.get(meta.get("behaviour_a", ""), {}).get(obj, 0.0)
            base_b = cat.get(meta.get("behaviour_b", ""), {}).get(obj, 0.0)
            out.append((d, base_a - base_b))
    return out


def bayes_ceiling(records: list[dict]) -> dict[str, float]:
    """Per objective, the expected accuracy on decided ("a"/"b") labels of an oracle that knows
    the hidden scores and predicts sign(s_a - s_b): no reward model can expect to beat it."""
    out = {}
    for obj in ALL_OBJECTIVES:
        diffs = _decidable(records, obj)
        if diffs:
            out[obj] = round(sum(_sigmoid(abs(d) / NOISE_T) for d, _ in diffs) / len(diffs), 4)
    return out


def behaviour_ceiling(records: list[dict]) -> dict[str, float]:
    """Per objective, the expected accuracy on decided labels of a model that knows only each
    response's behaviour (it predicts from the base scores, and guesses on equal ones): what a
    reward model that reads behaviour perfectly from the text can expect."""
    out = {}
    for obj in ALL_OBJECTIVES:
        diffs = _decidable(records, obj)
        if diffs:
            acc = [0.5 if abs(base) < 1e-9 else _sigmoid((d if base > 0 else -d) / NOISE_T)
                   for d, base in diffs]
            out[obj] = round(sum(acc) / len(acc), 4)
    return out


def _oracle_accuracy(records: list[dict]) -> dict[str, float]:
    """The oracle of `bayes_ceiling` scored against the labels actually drawn."""
    out = {}
    for obj in ALL_OBJECTIVES:
        hits = [(rec["meta"]["true_a"][obj] > rec["meta"]["true_b"][obj]) == (lab == "a")
                for rec in records if (lab := rec.get("labels", {}).get(obj)) in ("a", "b")]
        if hits:
            out[obj] = round(sum(hits) / len(hits), 4)
    return out


def _disagreement(records: list[dict], x: str, y: str) -> tuple[int, int]:
    """(pairs where x and y are both decided, pairs among them where they point opposite)."""
    both = [(r["labels"][x], r["labels"][y]) for r in records
            if r.get("labels", {}).get(x) in ("a", "b") and r["labels"].get(y) in ("a", "b")]
    return len(both), sum(a != b for a, b in both)


def describe(records: list[dict]) -> dict:
    """Counts and label statistics of a generated set (JSON-serialisable)."""
    prompts = {r["prompt"]: r.get("category", "") for r in records}
    responses: dict[tuple[str, str], str] = {}
    for r in records:
        responses[(r["prompt"], r["response_a"])] = r["meta"]["behaviour_a"]
        responses[(r["prompt"], r["response_b"])] = r["meta"]["behaviour_b"]
    labels = {}
    for obj in ALL_OBJECTIVES:
        c = Counter(r.get("labels", {}).get(obj, "missing") for r in records)
        labels[obj] = {k: c.get(k, 0) for k in ("a", "b", "tie", "missing")}
    n = max(len(records), 1)
    n_both, n_disagree = _disagreement(records, _H, _S)
    return {
        "n_records": len(records),
        "n_prompts": len(prompts),
        "n_responses": len(responses),
        "prompts_per_category": dict(sorted(Counter(prompts.values()).items())),
        "records_per_category": dict(sorted(Counter(r.get("category") for r in records).items())),
        "responses_per_behaviour": dict(sorted(Counter(responses.values()).items())),
        "labels": labels,
        "coverage": {o: round(1 - labels[o]["missing"] / n, 4) for o in ALL_OBJECTIVES},
        # Share of all pairs where helpful and harmless are both decided and point opposite ways,
        # and the same share among only the pairs where both are decided.
        "helpful_harmless_disagreement": round(n_disagree / n, 4),
        "helpful_harmless_disagreement_of_decided": round(n_disagree / max(n_both, 1), 4),
        "bayes_ceiling": bayes_ceiling(records),
        "behaviour_ceiling": behaviour_ceiling(records),
        "oracle_accuracy": _oracle_accuracy(records),
    }
