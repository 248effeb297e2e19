"""The Reward models page under AppTest: the train form, job submission, the live job panel,
and a trained model's report (a tiny backbone trained in the test, through the real job)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.jobs.store import JobStore
from morm_explorer.jobs.worker import run_inline
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.jobs import TrainRewardModelJob
from morm_explorer.workspace import Workspace
from tests.conftest import REPO, open_app_page
from tests.test_reward import tiny_pairs

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack

PAGE = "pages/reward_models.py"
KIND = TrainRewardModelJob.kind
DEMO_OBJECTIVES = ["helpful", "harmless", "honest"]


def demo_objectives(ws) -> list[str]:
    """The demo data's objectives but overall, in the order the data gives them."""
    objectives = [o for o in ws.load_dataset("demo-preferences").objectives if o != "overall"]
    assert sorted(objectives) == sorted(DEMO_OBJECTIVES)
    return objectives


def test_reward_library_never_imports_streamlit():
    code = ("import sys, morm_explorer.reward.report, morm_explorer.reward.jobs, "
            "morm_explorer.ui.reward_figures; print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def open_page() -> AppTest:
    return open_app_page(PAGE, timeout=120)


def test_page_shows_train_form_for_demo(ws, no_worker):
    at = open_page()
    assert at.title[0].value == "Reward models"
    assert at.selectbox(key="rm_dataset").value == "demo-preferences"
    objectives = demo_objectives(ws)
    assert at.multiselect(key="rm_objectives").value == objectives  # overall left out
    assert [n.label for n in at.number_input if n.key.startswith("rm_w_")] == objectives
    assert at.text_input(key="rm_name").value == "demo-preferences-rm"
    assert any("No trained reward models yet" in i.value for i in at.info)


def test_start_training_submits_a_job_and_bad_input_submits_nothing(ws, no_worker):
    at = open_page()
    at.number_input(key="rm_w_harmless").set_value(2.5)
    at.radio(key="rm_head").set_value("mlp")
    at.text_input(key="rm_name").input("my-rm")
    at.button(key="rm_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    jobs = JobStore(ws).list(kind=KIND)
    assert [j.status for j in jobs] == ["queued"]
    cfg = jobs[0].spec["config"]
    assert cfg["loss_weights"] == {"helpful": 1.0, "harmless": 2.5, "honest": 1.0}
    assert cfg["objectives"] == demo_objectives(ws) and cfg["head"] == "mlp"
    assert cfg["name"] == "my-rm" and cfg["dataset"] == "demo-preferences"
    assert at.session_state["rm_job"] == jobs[0].id
    assert any("queued" in m.value for m in at.markdown)  # the job panel shows it

    for obj in DEMO_OBJECTIVES:
        at.number_input(key=f"rm_w_{obj}").set_value(0.0)
    at.button(key="rm_start").click().run()
    assert any("all loss weights are zero" in e.value for e in at.error)
    assert len(JobStore(ws).list()) == 1  # nothing more submitted

    at.button(key="rm_cancel").click().run()  # the queued job is cancelled at once
    assert JobStore(ws).get(jobs[0].id).status == "cancelled"


# -- a workspace with a trained tiny model, a succeeded and a failed job --------------------


def tiny_pairs_with_overall(n: int = 160) -> list[dict]:
    """`tiny_pairs` plus an `overall` label that follows helpful and prefers the risky
    response on harmless pairs: a single RM trained on it ranks harmless pairs wrong."""
    rows = []
    for r in tiny_pairs(n):
        (obj, lab), = r["labels"].items()
        overall = lab if obj == "helpful" else {"a": "b", "b": "a"}[lab]
        rows.append({**r, "labels": {obj: lab, "overall": overall}})
    return rows


@pytest.fixture(scope="module")
def trained_ws(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("rm-page") / "ws"
    ws = Workspace(root)
    path = root.parent / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs_with_overall()))
    ws.save_dataset("tiny", load_preference_data(path))
    cfg = TrainConfig(dataset="tiny", name="tiny-rm", backbone=tiny_bert, epochs=40,
                      batch_size=32, lr=1e-2, max_length=64, patience=0, test_fraction=0.2,
                      loss_weights={"helpful": 1.0, "harmless": 2.0}, device="cpu")
    ok = run_inline(ws, TrainRewardModelJob(config=cfg.to_dict()))
    assert ok.status == "succeeded", ok.error
    bad = run_inline(ws, TrainRewardModelJob(config={**cfg.to_dict(), "dataset": "gone",
                                                     "name": "never"}))
    assert bad.status == "failed"
    return {"ws": ws, "ok": ok.id, "bad": bad.id}


@pytest.fixture
def trained(trained_ws, monkeypatch):
    monkeypatch.setenv("MORM_WORKSPACE", str(trained_ws["ws"].root))
    return trained_ws


def test_models_section_shows_metrics_and_figures(trained):
    at = open_page()
    assert at.selectbox(key="rm_model").value == "tiny-rm"
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"helpful accuracy", "harmless accuracy"}
    assert float(metrics["harmless accuracy"].rstrip("%")) > 80
    charts = {c.proto.id.rsplit("-rm_fig_", 1)[-1] for c in at.get("plotly_chart")}
    assert {"accuracy", "single", "curves", "corr", "calibration"} <= charts
    gap = [i.value for i in at.info if i.value.startswith("A single overall RM")]
    assert gap and "harmless pairs right" in gap[0] and "the harmless head" in gap[0]
    table = next(d.value for d in at.dataframe if "ECE" in d.value.columns)  # held-out metrics
    stats = next(d.value for d in at.dataframe if "mean" in d.value.columns)
    assert list(table.index) == ["helpful", "harmless"] and table["accuracy"].min() > 0.5
    assert {"mean", "std", "q05", "q95"} <= set(stats.columns)
    assert any("loss weights helpful 1, harmless 2" in m.value for m in at.markdown)


def test_job_panel_shows_failed_then_succeeded_job(trained):
    at = open_page()
    assert at.selectbox(key="rm_job").value == trained["bad"]  # the newest job
    assert any("Training failed" in e.value for e in at.error)
    assert any("no dataset named 'gone'" in c.value for c in at.code)
    jobs = at.dataframe[0].value  # recent training jobs
    assert sorted(jobs["status"]) == ["failed", "succeeded"]

    at.selectbox(key="rm_job").set_value(trained["ok"]).run()
    assert not at.exception, at.exception
    assert any("Trained **tiny-rm**" in s.value.replace("\\", "") for s in at.success)


def test_job_finishing_while_watched_selects_the_new_model(trained):
    at = open_page()
    at.session_state["rm_seen_status"] = {trained["ok"]: "running"}  # seen running before
    at.selectbox(key="rm_job").set_value(trained["ok"]).run()
    assert not at.exception, at.exception
    assert at.session_state["rm_model"] == "tiny-rm"
    assert at.session_state["rm_seen_status"][trained["ok"]] == "succeeded"


def test_models_section_lists_stored_evaluations_and_training_data(trained):
    from morm_explorer.reward.evaluations import evaluation_entry, store_evaluation

    folder = trained["ws"].root / "reward_models" / "tiny-rm"
    before = (folder / "evaluations.json").read_text()
    store_evaluation(folder, evaluation_entry("/data/hh-rlhf/test.jsonl", {"objectives": {
        "harmless": {"accuracy": 0.61, "ci_low": 0.59, "ci_high": 0.63, "n": 2312}},
        "n_pairs": 2312}, date="2025-03-04T05:06:07+00:00"))
    try:
        at = open_page()
    finally:
        (folder / "evaluations.json").write_text(before)
    table = next(d.value for d in at.dataframe if "trained on" in d.value.columns)
    assert table["data"].tolist() == ["tiny held-out split", "hh-rlhf/test.jsonl"]
    assert set(table["model"]) == {"tiny-rm"}
    source = str(trained["ws"].root.parent / "tiny.jsonl")
    assert set(table["trained on"]) == {f"tiny ({source})"}
    heldout, hh = table.to_dict("records")
    n_test = json.loads((folder / "config.json").read_text())["metrics"]["n_test_pairs"]
    assert heldout["pairs"] == n_test and hh["pairs"] == 2312
    assert re.fullmatch(r"\d+\.\d% \[\d+\.\d, \d+\.\d\] n=\d+", heldout["helpful"])
    assert hh["harmless"] == "61.0% [59.0, 63.0] n=2312" and hh["helpful"] == ""
    assert hh["date"] == "2025-03-04 05:06"
    # shown as plain text: markdown characters in the path are escaped
    assert f"Training data: tiny ({source})" in [c.value.replace("\\", "") for c in at.caption]
