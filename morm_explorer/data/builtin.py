"""The built-in preference data: pairs of model-written responses (`rlcd`) beside the template
pairs (`synth`), labelled by the same simulated annotators.

``kind="model"`` (the default of `morm data synth`): every pair of kept model-written responses
to one prompt, plus the template data; ``kind="templates"``: the template data alone (what the
built-in data was before, kept for the tests that rely on it).

Hidden truth per (kind of prompt, behaviour), for the model-written responses; the labels follow
it through `synth._labels` (ties within the annotators' band, Bradley-Terry noise, some
objectives left unlabelled). "helpful" means helpful to the request as asked, so complying with a
harmful request is helpful and harmful; a refusal with the instructions after it ("leaky") is
about as harmful as complying. An answer to an unanswerable question given without doubt is
dishonest, whatever its wording.

    kind       behaviour       helpful harmless honest
    harmful    comply           0.90    0.05    0.90
    harmful    terse_comply     0.60    0.25    0.90
    harmful    leaky_refusal    0.75    0.15    0.90
    harmful    redirect         0.40    0.90    0.90
    harmful    refuse           0.10    0.90    0.90
    harmful    off_topic        0.10    0.90    0.50
    benign     comply           0.90    0.90    0.90
    benign     terse_comply     0.60    0.90    0.90
    benign     hedge            0.40    0.90    0.90
    benign     fabricate        0.75    0.60    0.10
    benign     refuse           0.10    0.90    0.90
    benign     off_topic        0.10    0.90    0.50
    uncertain  hedge            0.60    0.90    0.90
    uncertain  fabricate        0.75    0.70    0.05
    uncertain  terse_comply     0.40    0.90    0.25
    uncertain  refuse           0.10    0.90    0.90
    uncertain  off_topic        0.10    0.90    0.50
"""

from __future__ import annotations

import functools
import json
import random
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from morm_explorer.data import synth
from morm_explorer.data.rlcd import SHIPPED, check_behaviour, read_responses
from morm_explorer.errors import MormError

KINDS = ("model", "templates")
# The built-in annotators of the model-written data call a smaller difference a tie (the
# templates' own band, `synth.TIE_BAND`, is narrower; `tie_small_gaps`).
DECIDED_GAP = 0.1
_BASE: dict[str, dict[str, tuple[float, float, float]]] = {
    "harmful": {"comply": (0.90, 0.05, 0.90), "terse_comply": (0.60, 0.25, 0.90),
                "leaky_refusal": (0.75, 0.15, 0.90), "redirect": (0.40, 0.90, 0.90),
                "refuse": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50)},
    "benign": {"comply": (0.90, 0.90, 0.90), "terse_comply": (0.60, 0.90, 0.90),
               "hedge": (0.40, 0.90, 0.90), "fabricate": (0.75, 0.60, 0.10),
               "refuse": (0.10, 0.90, 0.90), "off_topic": (0.10, 0.90, 0.50)},
    "uncertain": {"hedge": (0.60, 0.90, 0.90), "fabricate": (0.75, 0.70, 0.05),
                  "terse_comply": (0.40, 0.90, 0.25), "refuse": (0.10, 0.90, 0.90),
                  "off_topic": (0.10, 0.90, 0.50)},
}


def _true(kind: str, behaviour: str, nrng: np.random.Generator) -> dict[str, float]:
    h, s, o = _BASE[kind][behaviour]
    scores = {name: round(float(np.clip(v + nrng.normal(0.0, synth.JITTER_SD), 0.0, 1.0)), 4)
              for name, v in zip(synth.OBJECTIVES, (h, s, o), strict=True)}
    scores[synth.OVERALL] = round(synth._overall(scores), 4)
    return scores


def kept_responses(rows: list[dict]) -> tuple[list[dict], Counter, Counter]:
    """The rows whose response passes `check_behaviour` now (the check is run again, so a
    stricter check applies without generating anew), with counts asked for and kept per
    behaviour."""
    asked, kept, out = Counter(), Counter(), []
    for r in rows:
        asked[r["behaviour"]] += 1
        if check_behaviour(r["behaviour"], r["prompt"], r["response"]) is None:
            kept[r["behaviour"]] += 1
            out.append(r)
    return out, asked, kept


def model_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    """Every pair of kept responses to one prompt, in random (a, b) order, with labels."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    by_prompt: dict[str, list[dict]] = {}
    for r in kept_responses(rows)[0]:
        by_prompt.setdefault(r["id"].split("-")[0], []).append(r)
    from morm_explorer.data.synth_bank import CATEGORIES, prompt_pool

    # A prompt taken from the template bank keeps its topic: `part_of` then puts it on the
    # same side as the template pairs of that topic.
    topics = {text: f"{c}-t{t:02d}" for c in CATEGORIES for t, _, text in prompt_pool(c)}
    records: list[dict] = []
    for pid in sorted(by_prompt):
        group = sorted(by_prompt[pid], key=lambda r: r["behaviour"])
        truth = [_true(r["kind"], r["behaviour"], nrng) for r in group]
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = (i, j) if rng.random() < 0.5 else (j, i)
                ra, rb = group[a], group[b]
                records.append({
                    "id": f"model-{seed}-{len(records)}", "prompt": ra["prompt"],
                    "response_a": ra["response"], "response_b": rb["response"],
                    "labels": synth._labels(truth[a], truth[b], nrng),
                    "category": ra["kind"],
                    "meta": {"behaviour_a": ra["behaviour"], "behaviour_b": rb["behaviour"],
                             "true_a": truth[a], "true_b": truth[b], "prompt_id": pid,
                             "topic_id": topics.get(ra["prompt"], pid), "written_by": "smollm2"},
                })
    return records


def part_of(record: dict) -> str:
    """"judge" for about a third of the topics (template data) and prompts (model-written
    data), "rm" for the rest: a fixed split, so that a held-out judge trained on one part
    shares no prompt, topic or model-written response with a reward model trained on the other
    (a few stock template replies, such as a flat refusal, occur in both)."""
    key = (record.get("meta") or {}).get("topic_id") or record["prompt"]
    return "judge" if zlib.crc32(key.encode()) % 3 == 0 else "rm"


def generate_builtin(seed: int = 0, kind: str = "model", n_prompts: int = 420,
                     responses: str | Path = SHIPPED, part: str | None = None) -> list[dict]:
    """The built-in data of ``kind`` as canonical pairwise records (a pure function of the seed
    and the responses file); ``part`` ("rm" or "judge", see `part_of`) keeps one part only."""
    if kind not in KINDS:
        raise MormError(f"unknown kind of built-in data {kind!r}; one of {', '.join(KINDS)}",
                        field="kind")
    if part not in (None, "rm", "judge"):
        raise MormError(f"part must be 'rm' or 'judge', got {part!r}", field="part")
    path = Path(responses)
    stamp = path.stat().st_mtime_ns if kind == "model" and path.exists() else 0
    records = [json.loads(line) for line in _records_json(seed, kind, n_prompts, str(path),
                                                           stamp)]
    if part is not None:
        records = [r for r in records if part_of(r) == part]
    if kind == "templates":
        return records  # exactly what `synth.generate` writes
    # A dataset lists its objectives in the order its records first name them: lead with a
    # pair labelled for all of them, so heads and sliders read helpful, harmless, honest.
    first = max(range(len(records)), key=lambda i: len(records[i]["labels"]), default=0)
    return records[first:first + 1] + records[:first] + records[first + 1:]


@functools.lru_cache(maxsize=4)
def _records_json(seed: int, kind: str, n_prompts: int, responses: str,
                  stamp: int) -> tuple[str, ...]:
    """The records of `generate_builtin` as JSON texts, computed once per process for each
    arguments and responses file version (``stamp``): the app's first start asks for both
    parts, and each call gets fresh dicts to change as it likes."""
    records = synth.generate(seed=seed, n_prompts=n_prompts)
    if kind == "model":
        records = balance_features(tie_small_gaps(model_pairs(read_responses(responses), seed)
                                                  + records), seed=seed)
    return tuple(json.dumps(r, ensure_ascii=False) for r in records)


def _withhold(records: list[dict], obj: str, name: str, target: float,
              rng: random.Random) -> int:
    """Withhold ``obj``'s label on just enough pairs that ``name`` alone decides, so that the
    feature's better direction scores ``target``; returns how many were withheld."""
    from morm_explorer.data.features import FEATURES

    f = FEATURES[name]
    decided = [r for r in records if r["labels"].get(obj) in ("a", "b")]
    sign = [np.sign(f(r["response_a"]) - f(r["response_b"])) for r in decided]
    agree = [r for r, d in zip(decided, sign, strict=True)
             if d != 0 and (d > 0) == (r["labels"][obj] == "a")]
    disagree = [r for r, d in zip(decided, sign, strict=True)
                if d != 0 and (d > 0) != (r["labels"][obj] == "a")]
    ties = len(decided) - len(agree) - len(disagree)
    if len(agree) < len(disagree):
        agree, disagree = disagree, agree  # the feature's better direction is "less wins"
    n = len(decided)
    k = int(np.ceil((len(agree) + 0.5 * ties - target * n) / (1 - target)))
    for r in rng.sample(agree, max(0, min(k, len(agree)))):
        r["labels"].pop(obj)
    return max(0, k)


def tie_small_gaps(records: list[dict], gap: float = DECIDED_GAP) -> list[dict]:
    """Call a label a tie where the two hidden scores differ by less than ``gap``. Such a
    difference is the per-response jitter between two responses of one behaviour: no text shows
    it, so a decided label there teaches a reward model noise (measured: held-out pairs with a
    gap of 0.05-0.1 were ranked right 12-33% of the time, against 95-98% above 0.2)."""
    for r in records:
        meta = r.get("meta") or {}
        ta, tb = meta.get("true_a"), meta.get("true_b")
        if not ta or not tb:
            continue
        for obj, label in r["labels"].items():
            if label in ("a", "b") and obj in ta and obj in tb and abs(ta[obj] - tb[obj]) < gap:
                r["labels"][obj] = "tie"
    return records


def balance_features(records: list[dict], target: float = 0.62, seed: int = 0) -> list[dict]:
    """Withhold labels (as annotators who skip an objective do) until no one surface feature
    (`features.FEATURES`) decides any objective beyond ``target``: a reward model must then read
    the behaviour, not the length or a stock phrase. Pairs left with no label are dropped."""
    from morm_explorer.data.features import FEATURES

    rng = random.Random(seed)
    for _ in range(4):  # withholding for one feature moves the others a little
        if not sum(_withhold(records, obj, name, target, rng)
                   for obj in synth.ALL_OBJECTIVES for name in FEATURES):
            break
    for r in records:  # the objectives in their usual order, whatever was withheld first
        r["labels"] = {o: r["labels"][o] for o in synth.ALL_OBJECTIVES if o in r["labels"]}
    return [r for r in records if r["labels"]]  # a pair with no label left says nothing


def write_builtin(path: str | Path, seed: int = 0, kind: str = "model", n_prompts: int = 420,
                  responses: str | Path = SHIPPED, part: str | None = None) -> int:
    """Write `generate_builtin` to ``path`` as JSONL, atomically; returns the record count."""
    from morm_explorer.workspace import atomic_write_jsonl

    records = generate_builtin(seed, kind, n_prompts, responses, part)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, records)
    return len(records)


def describe_builtin(records: list[dict], responses: str | Path = SHIPPED) -> dict:
    """What `describe` says of the template part, the behaviour check's share kept per
    behaviour of the model-written part, and the one-feature baselines of the whole."""
    from morm_explorer.data.features import feature_baselines

    written = [bool((r.get("meta") or {}).get("written_by")) for r in records]
    model = [r for r, w in zip(records, written, strict=True) if w]
    templates = [r for r, w in zip(records, written, strict=True) if not w]
    out: dict = {"n_records": len(records), "n_model_written_pairs": len(model),
                 "templates": synth.describe(templates)}
    if model:
        _, asked, kept = kept_responses(read_responses(responses))
        out["model_written_kept"] = {b: {"asked": asked[b], "kept": kept[b],
                                         "share": round(kept[b] / asked[b], 3)}
                                     for b in sorted(asked)}
    out["one_feature_baselines"] = {
        o: {k: round(v, 4) for k, v in row.items()}
        for o, row in feature_baselines(records, list(synth.OBJECTIVES)).items()}
    return out
