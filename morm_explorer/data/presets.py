"""Presets: mappings from known public preference formats onto the canonical records of `schema`.

A preset is a pure function from one raw row (a dict from a JSONL line, CSV row, Parquet row or
Hugging Face datasets row) to a list of canonical records: zero, one or several. It does not
validate the records it builds (the loader runs them through `validation.check_record`); it only
raises a `MormError` naming the raw field when a row cannot be mapped at all. The loader adds the
file and line.

Known formats: Anthropic HH-RLHF, PKU-SafeRLHF, nvidia HelpSteer2 and openbmb UltraFeedback.
Reading files belongs in `readers`, checking records in `validation`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from morm_explorer.errors import MormError

HH_ASSISTANT = "\n\nAssistant:"
ID_FIELDS: tuple[str, ...] = ("id", "prompt_id", "uid")

# Path fragments of the HH-RLHF subsets, in the order they are tried. "red-team" data is about
# eliciting harm, so what it measures is harmlessness.
_HH_SOURCES: tuple[tuple[str, str], ...] = (
    ("harmless-base", "harmless"),
    ("helpful-base", "helpful"),
    ("helpful-online", "helpful"),
    ("helpful-rejection-sampled", "helpful"),
    ("red-team", "harmless"),
)

HELPSTEER2_ATTRIBUTES: tuple[str, ...] = (
    "helpfulness", "correctness", "coherence", "complexity", "verbosity",
)
ULTRAFEEDBACK_ASPECTS: tuple[str, ...] = (
    "helpfulness", "honesty", "instruction_following", "truthfulness",
)
_NA_TEXT = frozenset({"", "n/a", "na", "none", "null"})
_JSON_TYPES = (str, int, float, bool, list, dict)


@dataclass(frozen=True)
class Preset:
    """One known raw format and how to map a row of it onto canonical records."""

    name: str
    kind: str  # "pairwise" or "ratings": the canonical kind the records have
    description: str
    required_fields: tuple[str, ...]
    convert: Callable[[Mapping[str, Any], dict], list[dict]]


# --- shared helpers ---------------------------------------------------------------------------


def _check_row(row: Any, required: tuple[str, ...]) -> None:
    if not isinstance(row, Mapping):
        raise MormError(f"expected an object, got {type(row).__name__}")
    for name in required:
        if name not in row or row[name] is None:
            raise MormError("missing required field", field=name)


def _text(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise MormError("missing required field", field=name)
    if not isinstance(value, str):
        raise MormError(f"expected a string, got {type(value).__name__}", field=name)
    return value


def _row_id(row: Mapping[str, Any]) -> str | None:
    """The row's own id, if it has one; otherwise the loader assigns one."""
    for name in ID_FIELDS:
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        if str(value).strip():
            return str(value)
    return None


def _number(value: Any, field: str, *, na_ok: bool = False) -> float | None:
    """A numeric cell as a float; None when absent (or "N/A" where that means not rated).

    Ratings arrive as ints, floats or digit strings depending on the dump and file format.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if na_ok and text.lower() in _NA_TEXT:
            return None
        try:
            value = float(text)
        except ValueError:
            raise MormError(f"expected a number, got {value!r}", field=field) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MormError(f"expected a number, got {type(value).__name__}", field=field)
    value = float(value)
    # A NaN is how tables spell an empty cell.
    return None if math.isnan(value) else value


def _extra_meta(row: Mapping[str, Any], used: tuple[str, ...], fmt: str) -> dict:
    """The fields a preset does not map, kept in meta so nothing the source says is lost."""
    meta: dict[str, Any] = {"source_format": fmt}
    for key, value in row.items():
        if key in used or key in ID_FIELDS or value is None:
            continue
        if isinstance(value, _JSON_TYPES):
            meta[str(key)] = value
    return meta


def _with_id(record: dict, rid: str | None) -> dict:
    if rid is not None:
        record["id"] = rid
    return record


# --- HH-RLHF ----------------------------------------------------------------------------------


def hh_objective_from_source(source: str) -> str | None:
    """The objective an HH-RLHF subset measures, from its file path or dataset name."""
    text = str(source or "").lower()
    for fragment, objective in _HH_SOURCES:
        if fragment in text:
            return objective
    return None


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen answer, rejected answer) of one HH-RLHF pair.

    The prompt is the longest common prefix cut back to its last complete "Assistant:" marker:
    splitting each text on its own last marker fails when a rejected answer itself contains
    "Human:"/"Assistant:" turns. The prompt is returned without that final marker.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(HH_ASSISTANT)
    if cut < 0:
        raise MormError(
            'no "Assistant:" turn shared by chosen and rejected: cannot tell the prompt from '
            "the answers",
            field="chosen",
        )
    start = cut + len(HH_ASSISTANT)
    return chosen[:cut].strip(), chosen[start:].strip(), rejected[start:].strip()


def convert_hh_rlhf(row: Mapping[str, Any], options: dict) -> list[dict]:
    """One pairwise record; chosen is response a, labelled for the subset's objective."""
    options = options or {}
    _check_row(row, ("chosen", "rejected"))
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    objective = options.get("objective") or hh_objective_from_source(options.get("source") or "")
    if not objective:
        raise MormError(
            "HH-RLHF files do not say which objective they measure and the file name does not "
            "tell (harmless-base, helpful-base, ...): pass an objective such as 'harmless' or "
            "'helpful'"
        )
    prompt, answer_a, answer_b = split_hh_dialogue(chosen, rejected)
    record = {
        "prompt": prompt,
        "response_a": answer_a,
        "response_b": answer_b,
        "labels": {str(objective): "a"},
        "meta": _extra_meta(row, ("chosen", "rejected"), "hh-rlhf"),
    }
    return [_with_id(record, _row_id(row))]


# --- PKU-SafeRLHF -----------------------------------------------------------------------------

_PKU_REQUIRED = ("prompt", "response_0", "response_1", "better_response_id")
_PKU_USED = (*_PKU_REQUIRED, "safer_response_id")


def _pku_label(row: Mapping[str, Any], field: str) -> str | None:
    """Response id 0/1 (int, float or string, by file format) as label "a"/"b"."""
    value = _number(row.get(field), field)
    if value is None:
        return None
    if value not in (0.0, 1.0):
        raise MormError(f"expected 0 or 1, got {row[field]!r}", field=field)
    return "a" if value == 0.0 else "b"


def convert_pku_saferlhf(row: Mapping[str, Any], options: dict) -> list[dict]:
    """One pairwise record: better_response_id labels helpful, safer_response_id harmless."""
    _check_row(row, _PKU_REQUIRED)
    labels = {"helpful": _pku_label(row, "better_response_id")}
    # Single-dimension variants of the data set carry only the helpfulness preference.
    harmless = _pku_label(row, "safer_response_id")
    if harmless is not None:
        labels["harmless"] = harmless
    record = {
        "prompt": _text(row, "prompt"),
        "response_a": _text(row, "response_0"),
        "response_b": _text(row, "response_1"),
        "labels": labels,
        "meta": _extra_meta(row, _PKU_USED, "pku-saferlhf"),
    }
    return [_with_id(record, _row_id(row))]


# --- HelpSteer2 -------------------------------------------------------------------------------

_HS2_REQUIRED = ("prompt", "response")


def convert_helpsteer2(row: Mapping[str, Any], options: dict) -> list[dict]:
    """One ratings record with the five 0-4 attributes; a missing attribute is left out."""
    _check_row(row, _HS2_REQUIRED)
    ratings = {}
    for attribute in HELPSTEER2_ATTRIBUTES:
        value = _number(row.get(attribute), attribute)
        if value is not None:
            ratings[attribute] = value
    record = {
        "prompt": _text(row, "prompt"),
        "response": _text(row, "response"),
        "ratings": ratings,
        "meta": _extra_meta(row, ("prompt", "response", *HELPSTEER2_ATTRIBUTES), "helpsteer2"),
    }
    return [_with_id(record, _row_id(row))]


# --- UltraFeedback ----------------------------------------------------------------------------

_UF_REQUIRED = ("instruction", "completions")


def _uf_rating(annotation: Any, field: str) -> float | None:
    """The Rating of one aspect; the annotation is a dict or, in some dumps, a 1-element list."""
    if isinstance(annotation, list):
        if not annotation:
            return None
        if len(annotation) > 1:
            raise MormError(f"expected one annotation, got {len(annotation)}", field=field)
        annotation = annotation[0]
    if annotation is None:
        return None
    if not isinstance(annotation, Mapping):
        raise MormError(f"expected an object, got {type(annotation).__name__}", field=field)
    return _number(annotation.get("Rating"), f"{field}.Rating", na_ok=True)


def _uf_record(completion: Any, field: str, row: Mapping[str, Any]) -> dict:
    if not isinstance(completion, Mapping):
        raise MormError(f"expected an object, got {type(completion).__name__}", field=field)
    response = completion.get("response")
    if not isinstance(response, str):
        raise MormError(f"expected a string, got {type(response).__name__}",
                        field=f"{field}.response")
    annotations = completion.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise MormError(f"expected an object, got {type(annotations).__name__}",
                        field=f"{field}.annotations")
    ratings = {}
    for aspect in ULTRAFEEDBACK_ASPECTS:
        value = _uf_rating(annotations.get(aspect), f"{field}.annotations.{aspect}")
        if value is not None:
            ratings[aspect] = value
    meta = {"source_format": "ultrafeedback", "model": completion.get("model"),
            "source": row.get("source"), "overall_score": completion.get("overall_score"),
            "fine-grained_score": completion.get("fine-grained_score")}
    return {
        "prompt": _text(row, "instruction"),
        "response": response,
        "ratings": ratings,
        "meta": {k: v for k, v in meta.items() if v is not None},
    }


def convert_ultrafeedback(row: Mapping[str, Any], options: dict) -> list[dict]:
    """One ratings record per completion, rated on the four UltraFeedback aspects."""
    _check_row(row, _UF_REQUIRED)
    _text(row, "instruction")
    completions = row["completions"]
    if not isinstance(completions, list):
        raise MormError(f"expected a list, got {type(completions).__name__}", field="completions")
    rid = _row_id(row)
    records = []
    for i, completion in enumerate(completions):
        record = _uf_record(completion, f"completions[{i}]", row)
        # One row holds several records: suffix the row id so the ids stay unique.
        records.append(_with_id(record, None if rid is None else f"{rid}-{i}"))
    return records


# --- registry ---------------------------------------------------------------------------------

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("hh-rlhf", "pairwise",
               "Anthropic HH-RLHF: chosen/rejected dialogues, one objective per subset",
               ("chosen", "rejected"), convert_hh_rlhf),
        Preset("pku-saferlhf", "pairwise",
               "PKU-SafeRLHF: response_0/response_1 with better (helpful) and safer (harmless) ids",
               _PKU_REQUIRED, convert_pku_saferlhf),
        Preset("helpsteer2", "ratings",
               "nvidia HelpSteer2: one response rated 0-4 on five attributes",
               _HS2_REQUIRED, convert_helpsteer2),
        Preset("ultrafeedback", "ratings",
               "openbmb UltraFeedback: several completions per instruction rated on four aspects",
               _UF_REQUIRED, convert_ultrafeedback),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a `MormError` listing the known names otherwise."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise MormError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[key]


def detect_preset(row: Mapping[str, Any]) -> str | None:
    """The preset a first row looks like, from its keys; None for canonical or unknown rows."""
    if not isinstance(row, Mapping):
        return None
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "hh-rlhf"
    if {"response_0", "response_1", "better_response_id"} <= keys:
        return "pku-saferlhf"
    if {"prompt", "response", "helpfulness", "correctness"} <= keys:
        return "helpsteer2"
    if {"instruction", "completions"} <= keys:
        return "ultrafeedback"
    return None
