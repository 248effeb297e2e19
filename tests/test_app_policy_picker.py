"""The policy pickers under AppTest: Fine-tune, Compare and Explore's sampler take a local policy
folder (queued as its absolute path, then offered next time), and a bad folder shows why and
queues nothing."""

from __future__ import annotations

import shutil

import pytest

from morm_explorer.jobs.store import JobStore
from morm_explorer.policy.source import remembered_policies
from pages.policy_picker import OTHER
from tests.conftest import open_app_page
from tests.test_policy import _save_tiny

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack


@pytest.fixture
def rm_ws(ws, tiny_rm, no_worker):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    return ws


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> str:
    return _save_tiny(tmp_path_factory.mktemp("my-policy"))


def errors(at) -> str:
    return " ".join(e.value.replace("\\", "") for e in at.error)


def test_finetune_takes_a_local_folder_and_offers_it_next_time(rm_ws, tiny_policy, tmp_path):
    at = open_app_page("pages/finetune.py")
    at.selectbox(key="ft_policy").set_value(OTHER).run()
    at.text_input(key="ft_policy_other").input(str(tmp_path / "nope")).run()
    at.button(key="ft_launch").click().run()
    assert "no such folder" in errors(at)
    assert JobStore(rm_ws).list(kind="ppo") == [] and remembered_policies(rm_ws) == []
    at.text_input(key="ft_policy_other").input(tiny_policy).run()
    at.button(key="ft_launch").click().run()
    assert not at.exception and not at.error
    (job,) = JobStore(rm_ws).list(kind="ppo")
    assert job.spec["config"]["policy"] == tiny_policy
    again = open_app_page("pages/finetune.py")
    assert tiny_policy in again.selectbox(key="ft_policy").options


def test_finetune_refuses_a_model_that_is_no_causal_lm(rm_ws, tiny_bert):
    at = open_app_page("pages/finetune.py")
    at.selectbox(key="ft_policy").set_value(OTHER).run()
    assert not [c for c in at.checkbox if c.key == "ft_policy_trust"]  # PPO runs no such code
    at.text_input(key="ft_policy_other").input(tiny_bert).run()
    at.button(key="ft_launch").click().run()
    assert "not a causal LM: its config.json names BertModel" in errors(at)
    assert JobStore(rm_ws).list(kind="ppo") == []


def test_compare_adds_a_local_folder_and_queues_it(rm_ws, tiny_policy, tmp_path):
    at = open_app_page("pages/compare.py", timeout=90)
    at.text_input(key="cmp_add_other").input(str(tmp_path / "nope")).run()
    at.button(key="cmp_add").click().run()
    assert "no such folder" in errors(at)
    assert at.multiselect(key="cmp_pols").value == ["smollm2"]
    at.text_input(key="cmp_add_other").input(tiny_policy).run()
    at.button(key="cmp_add").click().run()
    assert not at.exception and not at.error
    assert at.multiselect(key="cmp_pols").value == ["smollm2", tiny_policy]
    at.button(key="cmp_launch").click().run()
    assert not at.exception and not at.error
    (job,) = JobStore(rm_ws).list(kind="compare")
    assert job.spec["policies"] == ["smollm2", tiny_policy]
    assert job.spec["trust_remote_code"] is False


def test_compare_queues_nothing_when_an_added_folder_is_gone(rm_ws, tiny_policy, tmp_path):
    gone = shutil.copytree(tiny_policy, tmp_path / "gone")
    at = open_app_page("pages/compare.py", timeout=90)
    at.text_input(key="cmp_add_other").input(str(gone)).run()
    at.button(key="cmp_add").click().run()
    shutil.rmtree(gone)
    at.button(key="cmp_launch").click().run()
    assert "no such folder" in errors(at)
    assert JobStore(rm_ws).list(kind="compare") == []


def _sample_button(at):
    return next(b for b in at.button if b.label == "Sample as a job")


def test_explore_samples_from_a_local_folder(rm_ws, tiny_policy, tmp_path):
    at = open_app_page("pages/explore.py", explore_add_set=True)  # the "Add a set" expander
    at.selectbox(key="explore_policy").set_value(OTHER).run()
    at.text_input(key="explore_policy_other").input(str(tmp_path / "nope")).run()
    _sample_button(at).click().run()
    assert "no such folder" in errors(at)
    assert JobStore(rm_ws).list(kind="sample_candidates") == []
    at.text_input(key="explore_policy_other").input(tiny_policy).run()
    _sample_button(at).click().run()
    assert not at.exception and not at.error
    (job,) = JobStore(rm_ws).list(kind="sample_candidates")
    assert (job.spec["policy"], job.spec["trust_remote_code"]) == (tiny_policy, False)
    assert [s.ref for s in remembered_policies(rm_ws)] == [tiny_policy]


def test_explore_runs_a_model_of_its_own_code_only_with_the_checkbox(rm_ws, tiny_policy,
                                                                    tmp_path):
    import json

    custom = shutil.copytree(tiny_policy, tmp_path / "custom")
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="mine", auto_map={"AutoModelForCausalLM": "my_model.MyModel"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "my_model.py").write_text("raise SystemExit('remote code ran')\n")
    at = open_app_page("pages/explore.py", explore_add_set=True)  # the "Add a set" expander
    at.selectbox(key="explore_policy").set_value(OTHER).run()
    at.text_input(key="explore_policy_other").input(str(custom)).run()
    _sample_button(at).click().run()
    assert "which is run only with trust_remote_code" in errors(at)
    assert JobStore(rm_ws).list(kind="sample_candidates") == []
    at.checkbox(key="explore_policy_trust").check().run()
    _sample_button(at).click().run()
    assert not at.exception and not at.error
    (job,) = JobStore(rm_ws).list(kind="sample_candidates")
    assert (job.spec["policy"], job.spec["trust_remote_code"]) == (str(custom), True)
    assert str(custom) in open_app_page("pages/explore.py", explore_add_set=True).selectbox(
        key="explore_policy").options
    assert str(custom) not in open_app_page("pages/finetune.py").selectbox(
        key="ft_policy").options  # PPO runs no model code of its own
