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

pytestmark = pytest.mark.slow

PAGES = ["pages/home.py", "pages/tour.py", "pages/data.py", "pages/reward_models.py",
         "pages/explore.py", "pages/finetune.py", "pages/compare.py", "pages/evaluate.py"]
CONTROLS = {"rm_train", "ft_launch", "cmp_launch", "eval_create", "explore_import",
            "ft_cancel", "soup_launch"}


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
