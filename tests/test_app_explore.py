"""The Explore page under AppTest, on a fixture whose answer is known: three answers per prompt
(helpful-but-risky, a refusal, a balanced one, plus one they all dominate) with planted scores;
moving the sliders must move the winners table exactly as the weights say."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.scoring import store_scores
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack

PAGE = "pages/explore.py"
KINDS = {"risky": [2.0, -1.0, 0.0], "refusal": [-1.0, 2.0, 0.5], "balanced": [0.7, 0.7, 0.4],
         "dominated": [0.5, 0.5, 0.3]}


def plant_model(ws, tiny_rm, objectives):
    """A model folder whose config names ``objectives``; the page only reads cached scores."""
    dest = ws.root / "reward_models" / f"rm{len(objectives)}"
    shutil.copytree(tiny_rm, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["model"]["objectives"] = objectives
    cfg["stats"] = {"mean": [0.0] * len(objectives), "std": [1.0] * len(objectives)}
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest.name


@pytest.fixture
def known(ws, tiny_rm):
    recs, values = [], []
    for p in range(5):
        for kind, s in KINDS.items():
            recs.append({"prompt_id": f"p{p}", "prompt": f"Prompt {p}?",
                         "response": f"<b>{kind}</b> answer {p}", "source": kind,
                         "category": "test"})
            values.append(s)
    cset = from_records(recs)
    save_candidate_set(ws, "known", cset)
    for objectives in (["helpful", "harmless"], ["helpful", "harmless", "honest"]):
        name = plant_model(ws, tiny_rm, objectives)
        store_scores(ws, name, cset, np.array(values)[:, :len(objectives)], objectives)
    return ws


def open_page(model: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE).run()
    at.selectbox(key="explore_model").set_value(model).run()
    at.selectbox(key="explore_set").set_value("known").run()
    assert not at.exception
    return at


def winners(at) -> list[str]:
    table = next(d for d in at.dataframe if d.proto.id and "explore_table" in d.proto.id)
    return table.value["source"].tolist()


def set_weights(at, **w) -> None:
    for obj, v in w.items():
        at.slider(key=f"explore_w_{obj}").set_value(v)
    at.run()
    assert not at.exception


def test_sliders_move_the_winners(known):
    at = open_page("rm3")
    set_weights(at, helpful=1.0, harmless=0.0, honest=0.0)
    assert winners(at) == ["risky"] * 5
    set_weights(at, helpful=0.0, harmless=1.0)
    assert winners(at) == ["refusal"] * 5
    changed = next(m for m in at.metric if m.label == "Winners changed")
    assert changed.value == "5"
    set_weights(at, helpful=0.5, harmless=0.5)
    assert winners(at) == ["balanced"] * 5
    # a constraint overrides the weights; the fallback is reported
    set_weights(at, helpful=1.0, harmless=0.0)
    at.multiselect(key="explore_constrained").set_value(["harmless"]).run()
    at.number_input(key="explore_tau_harmless").set_value(1.5).run()
    assert winners(at) == ["refusal"] * 5
    at.number_input(key="explore_tau_harmless").set_value(9.0).run()
    assert any("least-violating" in w.value for w in at.warning)
    # the drill-down lists every candidate of the prompt with what dominates it
    detail = next(d for d in at.dataframe if "dominated_by" in d.value.columns)
    dom = detail.value.set_index("source")["dominated_by"]
    assert dom["dominated"] == "2" and dom["balanced"] == ""
    # model text is shown as text, never as markup
    assert any("<b>" in t.value for t in at.text)
    assert all("<b>" not in m.value for m in at.markdown)


def test_presets_scalarizers_and_two_objectives(known):
    at = open_page("rm2")
    assert any("three objectives" in i.value for i in at.info)  # no weight map for K=2
    at.selectbox(key="explore_preset").set_value("harmless-first")
    at.button(key="explore_apply").click().run()
    assert at.slider(key="explore_w_harmless").value == 0.6
    assert winners(at) == ["refusal"] * 5
    at.radio(key="explore_method").set_value("min").run()
    set_weights(at, helpful=0.5, harmless=0.5)
    assert winners(at) == ["balanced"] * 5
    at.text_input(key="explore_preset_name").input("mine").run()
    at.button(key="explore_preset_save").click().run()
    assert not at.exception
    at.selectbox(key="explore_preset").set_value("mine").run()


def test_all_zero_weights_warn_instead_of_failing(known):
    at = open_page("rm3")
    set_weights(at, helpful=0.0, harmless=0.0, honest=0.0)
    assert any("all weights are zero" in w.value for w in at.warning)


def test_unscored_small_set_is_scored_in_the_page(ws, tiny_rm):
    dest = ws.root / "reward_models" / "tiny"
    shutil.copytree(tiny_rm, dest)
    save_candidate_set(ws, "fresh", from_records(
        [{"prompt_id": f"p{i // 3}", "prompt": f"Q{i // 3}?", "response": f"answer {i}"}
         for i in range(9)]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(PAGE).run()
    at.selectbox(key="explore_model").set_value("tiny").run()
    at.selectbox(key="explore_set").set_value("fresh").run()
    assert not at.exception
    assert len(winners(at)) == 3


# -- how far the scores can be trusted -----------------------------------------------------------


def trust_messages(at) -> dict[str, list[str]]:
    """Warnings, infos and captions as plain text (the page escapes markdown characters)."""
    return {kind: [e.value.replace("\\", "") for e in getattr(at, kind)]
            for kind in ("warning", "info", "caption")}


def test_a_head_following_length_is_named(ws, tiny_rm):
    name = plant_model(ws, tiny_rm, ["helpful", "harmless"])
    cfg_path = ws.root / "reward_models" / name / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["reference"]  # as a model saved before models kept one
    cfg_path.write_text(json.dumps(cfg))
    recs, values = [], []
    for p in range(4):
        for j, harmless in enumerate([0.3, -0.1, 0.5, 0.0, 0.2]):  # Spearman with length -0.3
            recs.append({"prompt_id": f"p{p}", "prompt": f"Prompt {p}?",
                         "response": "word " * (2 * j + 2), "source": f"s{j}"})
            values.append([0.1 * j, harmless])  # helpful grows with length
    cset = from_records(recs)
    save_candidate_set(ws, "known", cset)
    store_scores(ws, name, cset, np.array(values), ["helpful", "harmless"])
    msgs = trust_messages(open_page(name))
    following = [w for w in msgs["warning"] if "follows response length" in w]
    assert following == ["helpful follows response length on this set (Spearman 1.00: longer "
                         "responses score higher)"]
    assert any("rm2 keeps no reference of its training texts" in i for i in msgs["info"])


def test_a_set_far_from_the_training_texts_is_flagged(ws, tiny_rm):
    from tests.test_reward import GOOD, SAFE

    shutil.copytree(tiny_rm, ws.root / "reward_models" / "tiny")
    save_candidate_set(ws, "far", from_records(
        [{"prompt_id": f"p{i // 3}", "prompt": "東京 7421 ξξ дом %% " * 3,
          "response": "🙂 qq 9981 ζ " * (i + 2)} for i in range(9)]))
    save_candidate_set(ws, "near", from_records(
        [{"prompt_id": f"p{i // 3}", "prompt": f"Question number {i // 3} about topic {i // 3}?",
          "response": (GOOD + SAFE)[i % 6]} for i in range(9)]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(PAGE).run()
    at.selectbox(key="explore_model").set_value("tiny").run()
    at.selectbox(key="explore_set").set_value("far").run()  # scored in the page
    assert not at.exception
    far = "of this set's texts lie farther from tiny's training texts than 99% of its held-out"
    assert [w for w in trust_messages(at)["warning"] if far in w] == [
        f"100% {far} training texts: its scores may not mean here what they meant in "
        "training."]
    at.selectbox(key="explore_set").set_value("near").run()
    assert not at.exception
    msgs = trust_messages(at)
    assert not [w for w in msgs["warning"] if far in w]
    assert f"0% {far} training texts." in msgs["caption"]


def test_the_sliders_survive_other_pages_and_seed_fine_tune(known):
    """Widget values go when another page opens; Explore keeps its weights for its next visit
    and for Fine-tune, which starts from them (and takes them again when they move)."""
    at = open_page("rm3")
    set_weights(at, helpful=0.0, harmless=1.0, honest=0.35)
    at.switch_page("pages/home.py").run()  # a page in between drops Explore's widget state
    at.switch_page("pages/finetune.py").run()
    at.selectbox(key="ft_model").set_value("rm3").run()
    assert not at.exception
    assert [at.slider(key=f"ft_w_{o}").value for o in ("helpful", "harmless", "honest")] == [
        0.0, 1.0, 0.35]
    at.switch_page(PAGE).run()
    at.selectbox(key="explore_model").set_value("rm3").run()
    at.selectbox(key="explore_set").set_value("known").run()
    assert [at.slider(key=f"explore_w_{o}").value for o in ("helpful", "harmless", "honest")
            ] == [0.0, 1.0, 0.35]
    set_weights(at, helpful=0.6)
    at.switch_page("pages/finetune.py").run()
    at.selectbox(key="ft_model").set_value("rm3").run()
    assert at.slider(key="ft_w_helpful").value == 0.6


def reader(at):
    return next(w for w in at.selectbox if str(w.key).startswith("explore_read_"))


def read_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("#"))


def test_switching_sets_relabels_the_candidate_reader(known):
    """A candidate's labels (its source, whether it won) come from the set shown: after a
    switch, "Read a candidate in full" is a new widget (the browser keeps a keyed selectbox's
    label text while its value stays valid) and says the new set's source and winner."""
    ws = known
    recs = [{"prompt_id": f"q{p}", "prompt": f"Other {p}?", "response": f"{src} reply {p}",
             "source": src, "category": "test"} for p in range(3) for src in ("sft", "base")]
    cset = from_records(recs)
    save_candidate_set(ws, "user", cset)
    # "base" wins every prompt under any weights; "sft" never does
    values = np.array([[-1.0, -1.0, -1.0] if r["source"] == "sft" else [1.0, 1.0, 1.0]
                       for r in recs])
    store_scores(ws, "rm3", cset, values, ["helpful", "harmless", "honest"])
    at = open_page("rm3")
    set_weights(at, helpful=1.0, harmless=0.0, honest=0.0)
    before = reader(at)
    before.set_value(0).run()  # risky, the winner of p0
    assert "#0 · source risky · the winner" in read_caption(at)
    at.selectbox(key="explore_set").set_value("user").run()
    assert not at.exception
    after = reader(at)
    assert after.key != before.key and after.id != before.id
    assert after.options == ["#1 · base", "#0 · sft"]  # best first; no state-dependent marks
    after.set_value(0).run()
    assert "#0 · source sft · not its prompt's winner" in read_caption(at)
    assert "sft reply 0" in [t.value for t in at.text]
    # weights that change the winner change the caption, not the selectbox's labels
    set_weights(at, helpful=0.0, harmless=1.0)
    assert reader(at).options == ["#1 · base", "#0 · sft"]
