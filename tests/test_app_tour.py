"""The walk-through page and presentation mode: every page renders with job controls hidden,
and the walk-through tells which steps are ready and which are still being prepared."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.candidates import load_candidate_set
from morm_explorer.demo import ensure_demo
from morm_explorer.scoring import store_scores
from morm_explorer.walkthrough import walkthrough
from tests.conftest import REPO
from tests.test_app_compare import compared  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

PAGES = ["pages/home.py", "pages/tour.py", "pages/data.py", "pages/reward_models.py",
         "pages/explore.py", "pages/finetune.py", "pages/compare.py", "pages/evaluate.py",
         "pages/jobs.py"]
CONTROLS = {"rm_train", "ft_launch", "cmp_launch", "eval_create", "explore_import",
            "ft_cancel", "soup_launch", "jobs_cancel"}


@pytest.fixture
def demo_ws(ws, tiny_rm):
    ensure_demo(ws)
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "demo-rm")
    cset = load_candidate_set(ws, "demo-candidates")
    rng = np.random.default_rng(0)
    store_scores(ws, "demo-rm", cset, rng.normal(size=(len(cset), 2)), ["helpful", "harmless"])
    return ws


def test_walkthrough_steps(demo_ws):
    data, reward, explore, policies, compare = walkthrough(demo_ws)
    assert data.ready and data.facts["records"] > 1000 and 0 < data.facts["conflict"] < 1
    assert reward.ready and set(reward.facts["accuracy"]) == {"helpful", "harmless"}
    assert explore.ready and explore.facts["prompts"] == 72
    assert set(explore.facts["means"]) == {"helpful", "harmless"}
    assert not policies.ready and "no PPO run" in policies.note
    assert not compare.ready


def test_presentation_mode_opens_the_walkthrough_and_hides_controls(demo_ws):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["present"] = "1"
    at.run()
    assert not at.exception
    assert any("Walk-through" in t.value for t in at.title)  # the default page when presenting
    assert any("Still being prepared" in i.value for i in at.info)
    assert any("changes the chosen answer" in m.value for m in at.markdown)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, page
        keys = {b.key for b in at.button} | {getattr(b, "key", None) for b in at.get("button")}
        assert not keys & CONTROLS, (page, keys & CONTROLS)


def test_the_example_is_never_one_where_leaning_harmless_just_picks_the_shorter_answer():
    from morm_explorer.walkthrough import example_prompt

    changed = np.array([0, 1, 3])
    helpful_len = np.array([100, 80, 10, 40])
    harmless_len = np.array([20, 80, 99, 55])
    assert example_prompt(changed, helpful_len, harmless_len) == 1  # 0: shorter; 2: unchanged
    assert example_prompt(np.array([0]), helpful_len, harmless_len) is None
    assert example_prompt(np.array([], dtype=int), helpful_len, harmless_len) is None


def test_walkthrough_states_its_bases(demo_ws):
    data, _, explore, _, _ = walkthrough(demo_ws)
    c = data.facts["counts"]
    assert 0 < c["decided"] <= c["labelled"] <= c["pairs"] == data.facts["records"]
    f = explore.facts
    if f["example"] is not None:  # the rule holds on the real step too
        assert len(f["example"]["harmless"]) >= len(f["example"]["helpful"])
    assert 0 <= f["n_examples"] <= f["changed"]
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/tour.py").run()
    assert not at.exception
    base = next(c.value for c in at.caption if "pairs that both helpful and harmless" in c.value)
    assert f"{c['decided']:,} pairs" in base and f"all {c['pairs']:,} pairs" in base
    means = next(d.value for d in at.dataframe if "helpful score" in d.value.columns)
    assert list(means.index) == ["weights leaning helpful", "weights leaning harmless"]
    assert list(means.columns) == ["helpful score", "harmless score"]
    assert any("raw output of that objective's head" in c.value for c in at.caption)
    assert any("measured by the comparison of step 5" in c.value for c in at.caption) or \
        any("Still being prepared" in i.value for i in at.info)


def test_policies_step_states_differences_only_when_clear(compared):  # noqa: F811
    import json

    from morm_explorer.evaluation.compare import load_comparison
    from morm_explorer.evaluation.stats import mean_differences

    ws = compared
    (ws.root / "policies" / "tuned").mkdir(parents=True)
    (ws.root / "policies" / "tuned" / "morm_ppo.json").write_text(json.dumps(
        {"config": {"weights": {"helpful": 1.0}, "steps": 2, "policy": "base"}}))
    step = walkthrough(ws)[3]
    assert step.ready and step.facts["pair"] == ("tuned", "base")
    cmp = load_comparison(ws, "ab")
    expected = mean_differences(cmp.frame, "tuned", "base", cmp.objectives)
    assert [r["verdict"] for r in step.facts["differences"]] == expected["verdict"].tolist()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/tour.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown).replace("\\", "")
    for row in step.facts["differences"]:
        said = "scores higher than" if row["clear"] else "no clear difference"
        assert f"{row['objective']}: " in text and said in text
    assert "give policies that make different trade-offs" not in text


def test_presented_fine_tune_does_not_point_at_a_hidden_form(demo_ws):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["present"] = "1"
    at.run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception
    assert any(c.value == "No RL run yet." for c in at.caption)
    assert not any("on the left" in c.value for c in at.caption)
