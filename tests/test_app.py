"""The app under Streamlit's AppTest: every page renders and its actions work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, good_pair

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack


@pytest.fixture
def app(ws):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_library_never_imports_streamlit():
    code = ("import sys, morm_explorer.cli, morm_explorer.data.loaders, morm_explorer.demo, "
            "morm_explorer.ui.figures, morm_explorer.workspace, morm_explorer.data.synth; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "False"


def test_overview_shows_demo_dataset(app, ws):
    names = ["demo-preferences", "demo-judge-preferences"]  # the reward model's and judge's
    assert [d.name for d in ws.list_datasets()] == names
    assert app.title[0].value == "MORM Explorer"
    assert app.metric[0].value == "2"
    assert app.dataframe[0].value["name"].tolist() == names


def test_data_page_shows_demo_summary(app, ws):
    app.switch_page("pages/data.py").run()
    assert not app.exception, app.exception
    metrics = {m.label: m.value for m in app.metric}
    n_demo = len(ws.load_dataset("demo-preferences"))
    assert n_demo > 1000 and int(metrics["Valid"].replace(",", "")) == n_demo
    assert metrics["Errors"] == "0" and metrics["Kind"] == "pairwise"
    assert any("All" in s.value and "valid" in s.value for s in app.success)
    per_obj = [d.value for d in app.dataframe if "helpful" in d.value.index]  # not the issues
    assert len(per_obj) == 1
    assert {"helpful", "harmless", "honest", "overall"} <= set(per_obj[0].index)


def test_data_page_bad_file_stop_then_drop_then_save(app, ws, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(good_pair(1)) + "\n" + json.dumps(good_pair(2, prompt=""))
                    + "\n" + json.dumps(good_pair(3)) + "\n")
    app.switch_page("pages/data.py").run()
    app.radio(key="data_source").set_value("Path or HF dataset on this machine").run()
    app.text_input(key="data_path").input(str(path)).run()
    assert not app.exception, app.exception
    assert any("1 errors in 1 rows" in e.value for e in app.error)
    issues = app.dataframe[0].value
    assert issues.iloc[0]["line"] == 2 and issues.iloc[0]["field"] == "prompt"

    app.radio(key="data_on_error").set_value("drop").run()
    assert any("Dropped 1 bad rows" in w.value for w in app.warning)
    app.text_input(key="data_save_name").input("my pairs").run()
    app.button(key="data_save").click().run()
    assert any("Saved 2 records as **my-pairs**" in s.value.replace("\\", "")
               for s in app.success)
    assert ws.load_dataset("my-pairs").records[0]["id"] == "p1"

    app.button(key="data_save").click().run()  # again, without overwrite: refused
    assert any("exists" in e.value for e in app.error)
    assert len(ws.load_dataset("my-pairs")) == 2


def test_data_page_shows_a_dataset_imported_with_a_higher_max_chars(app, ws, tmp_path):
    from morm_explorer.cli import main

    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps(good_pair(0, response_a="y" * 150_000)) + "\n")
    assert main(["--workspace", str(ws.root), "data", "import", str(src), "--name", "long",
                 "--max-chars", "200000"]) == 0
    app.switch_page("pages/data.py").run()
    app.selectbox(key="data_ws_name").set_value("long").run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    assert {m.label: m.value for m in app.metric}["Valid"] == "1"


def test_data_page_unreadable_path_is_an_error(app, tmp_path):
    app.switch_page("pages/data.py").run()
    app.radio(key="data_source").set_value("Path or HF dataset on this machine").run()
    app.text_input(key="data_path").input(str(tmp_path / "missing.jsonl")).run()
    assert not app.exception
    assert any("no such file" in e.value for e in app.error)


def test_page_facing_library_stays_light():
    """The pages' imports never load torch or transformers: the app starts fast and a page
    rerun costs no model import (models load only in jobs and scoring)."""
    code = ("import sys, morm_explorer.reward.report, morm_explorer.reward.jobs, "
            "morm_explorer.jobs.backend, morm_explorer.ui.reward_figures, "
            "morm_explorer.data.loaders, morm_explorer.scoring, morm_explorer.explore, "
            "morm_explorer.policy.jobs, morm_explorer.ui.explore_figures, "
            "morm_explorer.weight_presets, morm_explorer.data.candidates, morm_explorer.cli, "
            "morm_explorer.evaluation.compare, morm_explorer.evaluation.report, "
            "morm_explorer.evaluation.sessions, morm_explorer.evaluation.agreement, "
            "morm_explorer.evaluation.exports, morm_explorer.evaluation.session_report, "
            "morm_explorer.walkthrough, morm_explorer.demo_jobs, morm_explorer.policy.sweep, "
            "morm_explorer.policy.soup, morm_explorer.policy.cost, morm_explorer.ui.ppo_figures, "
            "morm_explorer.ui.compare_figures, morm_explorer.policy.ppo_jobs; "
            "morm_explorer.cli.build_parser(); print('torch' in sys.modules, "
            "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.split() == ["False", "False"]
