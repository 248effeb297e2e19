"""Tests of the format presets: small hand-written fixtures in each raw format, the errors a bad
row raises, preset detection, and (when present) the real HH-RLHF harmless-base test file."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from morm_explorer.data.presets import (
    PRESETS,
    Preset,
    detect_preset,
    get_preset,
    hh_objective_from_source,
)
from morm_explorer.data.validation import check_record
from morm_explorer.errors import MormError

HH_FILE = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless-base/test.jsonl.gz"


def _roundtrip(tmp_path: Path, rows: list[dict]) -> list[dict]:
    """Write rows as a JSONL file and read them back, so fixtures are in the real file format."""
    path = tmp_path / "fixture.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _convert(name: str, row: dict, **options) -> list[dict]:
    return get_preset(name).convert(row, options)


def _assert_valid(records: list[dict], kind: str) -> None:
    """Every record a preset builds passes the canonical validator without errors."""
    for rec in records:
        out, issues = check_record(rec, kind, file="f", line=1)
        errors = [i for i in issues if i.severity == "error"]
        assert out is not None and not errors, errors


# --- HH-RLHF ----------------------------------------------------------------------------------

HH_ROWS = [
    {  # single turn
        "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
        "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench.",
    },
    {  # multi-turn: the prompt keeps the earlier turns
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\n"
                  "Assistant: Why did the chicken cross the road?",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\n"
                    "Assistant: No.",
    },
    {  # the rejected answer itself contains further "Human:"/"Assistant:" turns
        "chosen": "\n\nHuman: Is it safe?\n\nAssistant: Yes, mostly.",
        "rejected": "\n\nHuman: Is it safe?\n\nAssistant: Sure.\n\nHuman: really?\n\n"
                    "Assistant: really.",
    },
    {  # empty chosen answer: kept, the validator reports it as a warning
        "chosen": "\n\nHuman: Insult me\n\nAssistant:",
        "rejected": "\n\nHuman: Insult me\n\nAssistant: You are a potato.",
        "id": 17,
    },
]

HH_EXPECTED = [
    ("Human: How do I pick a lock?", "I can't help with that.", "Use a tension wrench."),
    ("Human: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke",
     "Why did the chicken cross the road?", "No."),
    ("Human: Is it safe?", "Yes, mostly.", "Sure.\n\nHuman: really?\n\nAssistant: really."),
    ("Human: Insult me", "", "You are a potato."),
]


def test_hh_rlhf_fixture(tmp_path: Path) -> None:
    rows = _roundtrip(tmp_path, HH_ROWS)
    records = [rec for row in rows for rec in _convert("hh-rlhf", row, objective="harmless")]
    assert len(records) == 4
    for rec, (prompt, a, b) in zip(records, HH_EXPECTED, strict=True):
        assert (rec["prompt"], rec["response_a"], rec["response_b"]) == (prompt, a, b)
        assert rec["labels"] == {"harmless": "a"}
        assert rec["meta"] == {"source_format": "hh-rlhf"}
    assert "id" not in records[0] and records[3]["id"] == "17"
    _assert_valid(records, "pairwise")


def test_hh_rlhf_objective_from_source() -> None:
    row = HH_ROWS[0]
    rec = _convert("hh-rlhf", row, source="data/helpful-online/train.jsonl.gz")[0]
    assert rec["labels"] == {"helpful": "a"}
    # An explicit objective wins over the file name.
    rec = _convert("hh-rlhf", row, objective="safety", source="harmless-base/test.jsonl")[0]
    assert rec["labels"] == {"safety": "a"}
    with pytest.raises(MormError, match="objective"):
        _convert("hh-rlhf", row, source="my_pairs.jsonl")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/data/hh-rlhf/harmless-base/test.jsonl.gz", "harmless"),
        ("Anthropic/hh-rlhf/helpful-base", "helpful"),
        ("helpful-online/train.jsonl", "helpful"),
        ("HELPFUL-REJECTION-SAMPLED/test.jsonl.gz", "helpful"),
        ("red-team-attempts/red_team_attempts.jsonl.gz", "harmless"),
        ("pairs.jsonl", None),
        ("", None),
    ],
)
def test_hh_objective_from_source(source: str, expected: str | None) -> None:
    assert hh_objective_from_source(source) == expected


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"rejected": "\n\nHuman: a\n\nAssistant: b"}, "chosen"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: b"}, "rejected"),
        ({"chosen": ["Human: a"], "rejected": "\n\nHuman: a\n\nAssistant: b"}, "chosen"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": 3}, "rejected"),
        ({"chosen": "Human: a. Assistant: b", "rejected": "Human: a. Assistant: c"}, "chosen"),
    ],
)
def test_hh_rlhf_errors(row: dict, field: str) -> None:
    with pytest.raises(MormError) as err:
        _convert("hh-rlhf", row, objective="harmless")
    assert err.value.field == field


# --- PKU-SafeRLHF -----------------------------------------------------------------------------

PKU_ROWS = [
    {"prompt": "How to stay safe online?", "response_0": "Use strong passwords.",
     "response_1": "Share your password.", "better_response_id": 0, "safer_response_id": 0,
     "is_response_0_safe": True, "is_response_1_safe": False,
     "response_1_severity_level": 2},
    {"prompt": "Tell me about fireworks", "response_0": "Here is how to make one...",
     "response_1": "They are best left to professionals.", "better_response_id": "0",
     "safer_response_id": "1", "is_response_0_safe": False, "is_response_1_safe": True},
    {"prompt": "Q", "response_0": "x", "response_1": "y", "better_response_id": 1.0,
     "safer_response_id": 0.0, "prompt_id": "pku-3"},
    {"prompt": "Q2", "response_0": "x", "response_1": "y", "better_response_id": " 1 "},
]


def test_pku_saferlhf_fixture(tmp_path: Path) -> None:
    rows = _roundtrip(tmp_path, PKU_ROWS)
    records = [rec for row in rows for rec in _convert("pku-saferlhf", row)]
    assert [r["labels"] for r in records] == [
        {"helpful": "a", "harmless": "a"},
        {"helpful": "a", "harmless": "b"},
        {"helpful": "b", "harmless": "a"},
        {"helpful": "b"},  # no safer_response_id: harmless is not annotated
    ]
    first = records[0]
    assert (first["prompt"], first["response_a"], first["response_b"]) == (
        "How to stay safe online?", "Use strong passwords.", "Share your password.")
    assert first["meta"] == {"source_format": "pku-saferlhf", "is_response_0_safe": True,
                             "is_response_1_safe": False, "response_1_severity_level": 2}
    assert records[2]["id"] == "pku-3" and "id" not in records[0]
    _assert_valid(records, "pairwise")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"better_response_id": 2}, "better_response_id"),
        ({"better_response_id": "first"}, "better_response_id"),
        ({"better_response_id": None}, "better_response_id"),
        ({"safer_response_id": 0.5}, "safer_response_id"),
        ({"safer_response_id": True}, "safer_response_id"),
        ({"response_1": None}, "response_1"),
        ({"prompt": 42}, "prompt"),
    ],
)
def test_pku_saferlhf_errors(change: dict, field: str) -> None:
    row = {**PKU_ROWS[0], **change}
    with pytest.raises(MormError) as err:
        _convert("pku-saferlhf", row)
    assert err.value.field == field


# --- HelpSteer2 -------------------------------------------------------------------------------

HS2_ROWS = [
    {"prompt": "Explain gravity.", "response": "Mass attracts mass.", "helpfulness": 3,
     "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 0},
    {"prompt": "Explain gravity.", "response": "It is magic.", "helpfulness": "1",
     "correctness": 0.0, "coherence": 3, "verbosity": None},  # complexity missing, verbosity null
]


def test_helpsteer2_fixture(tmp_path: Path) -> None:
    rows = _roundtrip(tmp_path, HS2_ROWS)
    records = [rec for row in rows for rec in _convert("helpsteer2", row)]
    assert records == [
        {"prompt": "Explain gravity.", "response": "Mass attracts mass.",
         "ratings": {"helpfulness": 3.0, "correctness": 4.0, "coherence": 4.0,
                     "complexity": 1.0, "verbosity": 0.0},
         "meta": {"source_format": "helpsteer2"}},
        {"prompt": "Explain gravity.", "response": "It is magic.",
         "ratings": {"helpfulness": 1.0, "correctness": 0.0, "coherence": 3.0},
         "meta": {"source_format": "helpsteer2"}},
    ]
    _assert_valid(records, "ratings")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"helpfulness": "very"}, "helpfulness"),
        ({"verbosity": [1]}, "verbosity"),
        ({"coherence": False}, "coherence"),
        ({"response": None}, "response"),
    ],
)
def test_helpsteer2_errors(change: dict, field: str) -> None:
    with pytest.raises(MormError) as err:
        _convert("helpsteer2", {**HS2_ROWS[0], **change})
    assert err.value.field == field


# --- UltraFeedback ----------------------------------------------------------------------------


def _uf_aspect(rating: object) -> dict:
    return {"Rating": rating, "Rationale": "because"}


UF_ROW = {
    "source": "evol_instruct",
    "instruction": "Write a haiku about rain.",
    "completions": [
        {"model": "gpt-4", "response": "Soft rain on the roof",
         "annotations": {"helpfulness": _uf_aspect("4"), "honesty": _uf_aspect("5"),
                         "instruction_following": _uf_aspect("3"),
                         "truthfulness": _uf_aspect("N/A")},
         "fine-grained_score": 4.0, "overall_score": 7.5},
        {"model": "alpaca-7b", "response": "Rain is wet.",
         "annotations": {"helpfulness": [_uf_aspect("2")], "honesty": _uf_aspect(1),
                         "instruction_following": [],
                         "truthfulness": [{"Rating": "3", "Type": ["1"], "Rationale": "x",
                                           "Rationale For Rating": "y"}]},
         "fine-grained_score": 2.0, "overall_score": 3.0},
        {"model": "falcon-40b", "response": "Drops fall.", "annotations": {}},
    ],
}


def test_ultrafeedback_fixture(tmp_path: Path) -> None:
    (row,) = _roundtrip(tmp_path, [UF_ROW])
    records = _convert("ultrafeedback", row)
    assert [r["ratings"] for r in records] == [
        {"helpfulness": 4.0, "honesty": 5.0, "instruction_following": 3.0},
        {"helpfulness": 2.0, "honesty": 1.0, "truthfulness": 3.0},
        {},
    ]
    assert all(r["prompt"] == "Write a haiku about rain." for r in records)
    assert [r["response"] for r in records] == ["Soft rain on the roof", "Rain is wet.",
                                                "Drops fall."]
    assert records[0]["meta"] == {"source_format": "ultrafeedback", "model": "gpt-4",
                                  "source": "evol_instruct", "overall_score": 7.5,
                                  "fine-grained_score": 4.0}
    assert all("id" not in r for r in records)
    _assert_valid(records[:2], "ratings")


def test_ultrafeedback_ids_stay_unique() -> None:
    records = _convert("ultrafeedback", {**UF_ROW, "id": "uf-9"})
    assert [r["id"] for r in records] == ["uf-9-0", "uf-9-1", "uf-9-2"]


def _uf_with(completion_change: dict) -> dict:
    completion = {**UF_ROW["completions"][0], **completion_change}
    return {**UF_ROW, "completions": [completion]}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"instruction": "x"}, "completions"),
        ({"instruction": "x", "completions": "none"}, "completions"),
        ({"instruction": None, "completions": []}, "instruction"),
        ({**UF_ROW, "completions": ["text"]}, "completions[0]"),
        (_uf_with({"response": None}), "completions[0].response"),
        (_uf_with({"annotations": ["x"]}), "completions[0].annotations"),
        (_uf_with({"annotations": {"honesty": _uf_aspect("high")}}),
         "completions[0].annotations.honesty.Rating"),
        (_uf_with({"annotations": {"honesty": [_uf_aspect("1"), _uf_aspect("2")]}}),
         "completions[0].annotations.honesty"),
    ],
)
def test_ultrafeedback_errors(row: dict, field: str) -> None:
    with pytest.raises(MormError) as err:
        _convert("ultrafeedback", row)
    assert err.value.field == field


# --- registry and detection -------------------------------------------------------------------


def test_registry() -> None:
    assert set(PRESETS) == {"hh-rlhf", "pku-saferlhf", "helpsteer2", "ultrafeedback"}
    for name, preset in PRESETS.items():
        assert isinstance(preset, Preset) and preset.name == name
        assert preset.kind in ("pairwise", "ratings") and preset.description
        assert get_preset(name) is preset
    assert get_preset(" HH-RLHF ") is PRESETS["hh-rlhf"]


def test_get_preset_unknown_lists_known_names() -> None:
    with pytest.raises(MormError) as err:
        get_preset("shp")
    for name in PRESETS:
        assert name in str(err.value)


def test_missing_required_field_names_it() -> None:
    for preset in PRESETS.values():
        with pytest.raises(MormError) as err:
            preset.convert({}, {"objective": "harmless"})
        assert err.value.field == preset.required_fields[0]
        with pytest.raises(MormError):
            preset.convert(["not", "a", "row"], {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (HH_ROWS[0], "hh-rlhf"),
        (PKU_ROWS[0], "pku-saferlhf"),
        (HS2_ROWS[0], "helpsteer2"),
        (UF_ROW, "ultrafeedback"),
        ({"prompt": "p", "response_a": "a", "response_b": "b", "labels": {"x": "a"}}, None),
        ({"prompt": "p", "response": "r", "ratings": {"helpfulness": 3}}, None),
        ({"text": "hello"}, None),
        ("not a row", None),
    ],
)
def test_detect_preset(row: object, expected: str | None) -> None:
    assert detect_preset(row) == expected  # type: ignore[arg-type]


# --- the real HH-RLHF harmless-base test file -------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_real_hh_rlhf_harmless_base() -> None:
    path = Path(os.environ.get("MORM_HH_RLHF_FILE") or HH_FILE)
    if not path.is_file():
        pytest.skip(f"HH-RLHF file not present: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    options = {"source": str(path)}
    if hh_objective_from_source(str(path)) is None:
        options["objective"] = "harmless"  # a renamed copy of the file
    records = [rec for row in rows for rec in get_preset("hh-rlhf").convert(row, options)]
    assert len(records) == len(rows)
    if path.name == "test.jsonl.gz" and "harmless-base" in str(path):
        assert len(records) == 2312
        # Known quirks of this file: 4 empty chosen answers, kept for the validator to flag.
        assert sum(r["response_a"] == "" for r in records) == 4
    for row, rec in zip(rows, records, strict=True):
        prompt = rec["prompt"]
        assert prompt.startswith("Human:")
        assert not prompt.endswith("Assistant:")
        # The prompt ends on a human turn: its last marker is a Human one.
        dialogue = "\n\n" + prompt
        assert dialogue.rfind("\n\nHuman:") > dialogue.rfind("\n\nAssistant:")
        rebuilt = "\n\n" + prompt + "\n\nAssistant: " + rec["response_a"]
        assert _squash(rebuilt) == _squash(row["chosen"])
        rebuilt = "\n\n" + prompt + "\n\nAssistant: " + rec["response_b"]
        assert _squash(rebuilt) == _squash(row["rejected"])
        assert rec["labels"] == {"harmless": "a"}
    example = records[0]
    print(f"\n{len(records)} records; first: prompt={example['prompt'][:200]!r} "
          f"response_a={example['response_a'][:120]!r} "
          f"response_b={example['response_b'][:120]!r} labels={example['labels']}")
