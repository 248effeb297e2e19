"""The Compare page under AppTest, on a real comparison of two tiny policies (one perturbed)
scored by a tiny reward model: figures, summaries, win rates, side by side as text, the report
download, the launch form, and presentation mode."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.evaluation.compare import CompareJob
from morm_explorer.jobs.store import JobStore
from morm_explorer.jobs.worker import run_inline
from tests.conftest import open_app_page
from tests.test_compare import _perturbed_copy
from tests.test_policy import _save_tiny

pytestmark = pytest.mark.slow

PAGE = "pages/compare.py"


@pytest.fixture
def compared(ws, tiny_rm, tmp_path, no_worker):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    base = _save_tiny(tmp_path / "base")
    tuned = _perturbed_copy(base, tmp_path / "tuned", base)
    info = run_inline(ws, CompareJob(name="ab", policies=[base, tuned], reward_model="rm",
                                     judge_model="rm", limit=3,
                                     sampling={"n": 2, "max_new_tokens": 4}, device="cpu"))
    assert info.status == "succeeded", info.error
    return ws


def open_page(**state) -> AppTest:
    return open_app_page(PAGE, timeout=90, **state)


def test_page_shows_the_comparison_and_builds_a_report(compared):
    at = open_page()
    assert len(at.get("plotly_chart")) >= 4
    tables = [d.value for d in at.dataframe]
    summary = next(t for t in tables if "n_prompts" in t.columns)
    assert list(summary.index) == ["base", "tuned"]
    wins = next(t for t in tables if "rate" in t.columns)
    assert set(wins["policy"]) == {"tuned"}
    assert len(at.text) >= 3 * (1 + 2 * 2)  # each prompt: its text and 2 x 2 responses
    at.selectbox(key="cmp_baseline").set_value("tuned").run()
    wins = next(d.value for d in at.dataframe if "rate" in d.value.columns)
    assert set(wins["policy"]) == {"base"}
    at.button(key="cmp_build").click().run()
    assert not at.exception
    assert at.session_state["cmp_report"][1].startswith(b"<!DOCTYPE html>")


def test_launch_form_submits_and_presentation_mode_hides_it(compared):
    at = open_page()
    at.multiselect(key="cmp_pols").set_value(["smollm2"]).run()
    assert at.button(key="cmp_launch").disabled  # one policy: nothing to compare
    assert len(JobStore(compared).list(kind="compare")) == 1  # only the fixture's own run
    presented = open_page(present=True)
    assert not [b for b in presented.button if b.key == "cmp_launch"]



def test_judge_training_data_and_trust_are_shown(compared):
    from morm_explorer.evaluation.compare import load_comparison

    cmp = load_comparison(compared, "ab")
    assert set(cmp.distances) == {"rm", "judge"} and len(cmp.distances["rm"]) == len(cmp.frame)
    assert cmp.manifest["reference"]["rm"]["p99"] > 0
    at = open_page()
    shown = [e.value.replace("\\", "") for kind in ("warning", "caption")
             for e in getattr(at, kind)]
    far = "of this set's texts lie farther from rm's training texts than 99% of its held-out"
    assert len([m for m in shown if far in m and not m.startswith("Judge: ")]) == 1
    assert len([m for m in shown if far in m and m.startswith("Judge: ")]) == 1
    # the judge here is the reward model itself: the page must say it is not held out
    note = [w.value.replace("\\", "") for w in at.warning if "The judge was trained on" in
            w.value.replace("\\", "")]
    assert len(note) == 1 and note[0].startswith("The judge was trained on pairs.jsonl (")
    assert "The same data (the same split)" in note[0] and "not held out" in note[0]


def test_a_judge_trained_on_other_data_is_said_to_be_disjoint(compared):
    import json

    judge = compared.root / "reward_models" / "judge"
    shutil.copytree(compared.root / "reward_models" / "rm", judge)
    cfg = json.loads((judge / "config.json").read_text())
    cfg["data"].update(name="judge-pairs", source="synth --seed 8", fingerprint="other")
    (judge / "config.json").write_text(json.dumps(cfg))
    path = compared.root / "comparisons" / "ab" / "comparison.json"
    manifest = json.loads(path.read_text())
    manifest["judge_model"]["name"] = "judge"
    path.write_text(json.dumps(manifest))
    at = open_page()
    notes = [i.value.replace("\\", "") for i in at.info if "The judge was trained on" in
             i.value.replace("\\", "")]
    assert len(notes) == 1 and notes[0].startswith(
        "The judge was trained on judge-pairs (synth --seed 8); the reward model on pairs.jsonl")
    assert "disjoint from the reward model's" in notes[0]
    assert not [w for w in at.warning if "The judge was trained on" in w.value.replace("\\", "")]


def test_differences_are_stated_only_when_their_interval_excludes_zero(compared):
    at = open_page()
    assert not at.exception
    diffs = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert set(diffs["policy"]) == {"tuned"} and len(diffs) == 2  # helpful, harmless
    for row in diffs.itertuples():
        clear = row.low > 0 or row.high < 0
        assert row.verdict == (("tuned higher" if row.diff > 0 else "base higher") if clear
                               else "no clear difference")
    assert any("only when the interval excludes zero" in c.value for c in at.caption)
    assert any("unbiased estimate of the KL" in c.value for c in at.caption)  # what kl is
