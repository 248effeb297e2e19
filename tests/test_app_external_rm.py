"""External and composite reward models in the app, under AppTest: the Reward models page's
"Add an existing model" and "Compose" forms, and every page that picks a reward model working
with an external one (Explore scores with it in the page)."""

from __future__ import annotations

import json
import shutil

import pytest

from morm_explorer.reward.external import ExternalConfig, add_external
from tests.conftest import open_app_page
from tests.test_external_rm import LABELS3, add_reference, save_bert

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack


@pytest.fixture(scope="module")
def bert3(tmp_path_factory) -> str:
    return save_bert(tmp_path_factory.mktemp("app-ext") / "bert3", 3, LABELS3, seed=7)


@pytest.fixture
def ext_ws(ws, bert3, no_worker):
    """A workspace with a small candidate set 'ref' and the external model 'ext'."""
    add_reference(ws)
    add_external(ws, "ext", ExternalConfig(model=bert3), reference="ref")
    return ws


def test_add_form_registers_a_model(ws, bert3, no_worker):
    add_reference(ws)
    at = open_app_page("pages/reward_models.py", timeout=120)
    at.text_input(key="rm_add_model").input(bert3)
    at.text_input(key="rm_add_name").input("my-ext")
    at.selectbox(key="rm_add_reference").set_value("ref")
    at.button(key="rm_add_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    config = json.loads((ws.root / "reward_models" / "my-ext" / "config.json").read_text())
    assert config["kind"] == "external" and config["reference_set"]["name"] == "ref"
    assert at.selectbox(key="rm_model").value == "my-ext"
    assert any("Added my" in s.value for s in at.success)
    assert any("External model" in m.value for m in at.markdown)
    stats = next(d.value for d in at.dataframe if "mean" in d.value.columns)
    assert list(stats.index) == ["helpful", "harmless", "honest"]


def test_add_form_shows_errors_and_stores_nothing(ws, bert3, tmp_path, no_worker):
    add_reference(ws)
    folder = tmp_path / "pickled"
    shutil.copytree(bert3, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    at = open_app_page("pages/reward_models.py", timeout=120)
    at.text_input(key="rm_add_model").input(str(folder))
    at.text_input(key="rm_add_name").input("bad")
    at.selectbox(key="rm_add_reference").set_value("ref")
    at.button(key="rm_add_start").click().run()
    assert not at.exception
    assert any("no safetensors weights" in e.value for e in at.error)
    at.text_input(key="rm_add_model").input(bert3)
    at.text_input(key="rm_add_objectives").input("a, b")
    at.button(key="rm_add_start").click().run()
    assert any("\\-\\-objectives has 2 names" in e.value for e in at.error)
    assert not (ws.root / "reward_models" / "bad").exists()


def test_compose_form(ext_ws):
    at = open_app_page("pages/reward_models.py", timeout=120)
    at.text_input(key="rm_compose_name").input("combo")
    at.text_area(key="rm_compose_parts").input("safe=ext:harmless\nbrevity=rule:length")
    at.selectbox(key="rm_compose_reference").set_value("ref")
    at.button(key="rm_compose_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.selectbox(key="rm_model").value == "combo"
    parts = next(d.value for d in at.dataframe if "part" in d.value.columns)
    assert parts.to_dict("records") == [{"objective": "safe", "part": "ext:harmless"},
                                        {"objective": "brevity", "part": "rule:length"}]
    at.button(key="rm_compose_start").click().run()  # the name is taken now
    assert any("exists" in e.value for e in at.error)
    at.text_input(key="rm_compose_name").input("combo2")
    at.text_area(key="rm_compose_parts").input("x=ext")  # three objectives: pick one
    at.button(key="rm_compose_start").click().run()
    assert any("pick one" in e.value for e in at.error)
    assert not (ext_ws.root / "reward_models" / "combo2").exists()


def test_explore_scores_with_an_external_model(ext_ws):
    at = open_app_page("pages/explore.py", timeout=120)
    at.selectbox(key="explore_model").set_value("ext").run()
    at.selectbox(key="explore_set").set_value("ref").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert {s.key for s in at.slider} >= {f"explore_w_{o}" for o in LABELS3.values()}
    assert list((ext_ws.root / "cache" / "scores").glob("*.safetensors"))


@pytest.mark.parametrize("page, key", [("pages/finetune.py", "ft_model"),
                                       ("pages/compare.py", None),
                                       ("pages/evaluate.py", None)])
def test_pages_that_pick_a_reward_model(ext_ws, page, key):
    at = open_app_page(page, timeout=120)
    assert not at.error, [e.value for e in at.error]
    if key:
        assert at.selectbox(key=key).value == "ext"


def test_explore_scores_with_a_one_output_model(ws, tmp_path, no_worker):
    """The commonest external model has one output: Explore draws its one-objective front (the
    best candidate of each prompt) instead of failing in the Pareto code."""
    add_reference(ws)
    one = save_bert(tmp_path / "bert1", 1, seed=3)
    add_external(ws, "one", ExternalConfig(model=one, objective="quality"), reference="ref")
    at = open_app_page("pages/explore.py", timeout=120)
    at.selectbox(key="explore_model").set_value("one").run()
    at.selectbox(key="explore_set").set_value("ref").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert {s.key for s in at.slider} >= {"explore_w_quality"}
