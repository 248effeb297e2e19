"""Checking a policy before a job is queued (`check_policy_source`): the built-in and fine-tuned
policies, local folders (missing, without config, not causal, custom code, pickles only),
hub names offline and online (a fake Hugging Face cache), revisions, and the workspace's list of
added policies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from morm_explorer.errors import MormError
from morm_explorer.policy.source import (
    CUSTOM,
    check_policy_source,
    known_policies,
    remember_policy,
    remembered_policies,
    split_ref,
)
from tests.test_policy import _save_tiny

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def _copy(src: str, dest: Path, **config) -> Path:
    shutil.copytree(src, dest)
    if config:
        cfg = json.loads((dest / "config.json").read_text())
        (dest / "config.json").write_text(json.dumps({**cfg, **config}))
    return dest


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_dir):
    """A Hugging Face cache holding org/tiny (main and a tag v1 -> one commit)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    repo = cache / "models--org--tiny"
    shutil.copytree(tiny_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return repo / "snapshots" / COMMIT


def test_builtin_and_fine_tuned_policies(ws, tiny_dir):
    assert check_policy_source("smollm2").kind == "builtin"
    assert check_policy_source("HuggingFaceTB/SmolLM2-135M-Instruct").ref == "smollm2"
    _copy(tiny_dir, ws.root / "policies" / "run1")
    src = check_policy_source("run1", workspace=ws)
    assert (src.kind, src.ref) == ("workspace", "run1")
    with pytest.raises(MormError, match="fine-tuned in this workspace") as e:
        check_policy_source("run1", revision="v1", workspace=ws)
    assert e.value.field == "revision"
    with pytest.raises(MormError, match="the built-in policy"):
        check_policy_source("smollm2@v2")


def test_a_local_folder_is_checked_and_made_absolute(tiny_dir, monkeypatch):
    monkeypatch.chdir(Path(tiny_dir).parent)
    src = check_policy_source(Path(tiny_dir).name)
    assert (src.kind, src.ref, src.model_type) == ("folder", tiny_dir, "llama")
    assert Path(src.ref).is_absolute() and not src.trust_remote_code
    with pytest.raises(MormError, match="is a local folder") as e:
        check_policy_source(tiny_dir, revision="main")
    assert e.value.field == "revision"


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such folder"),
    ("no config", "not a model folder: no config.json"),
    ("a file", "not a folder"),
    ("config not JSON", "not valid JSON"),
    ("unknown model type", "model type 'nosuch' has no AutoModelForCausalLM class"),
    ("no tokenizer", "no tokenizer: the folder holds none of tokenizer.json"),
    ("pickles only", "only pytorch_model.bin, pickle files"),
    ("auto_map", "code of its own (auto_map"),
])
def test_bad_folders_are_refused(tmp_path, tiny_dir, damage, message):
    dest = tmp_path / "pol"
    if damage == "a file":
        dest.write_text("x")
    elif damage != "missing":
        _copy(tiny_dir, dest)
    if damage == "no config":
        (dest / "config.json").unlink()
    elif damage == "config not JSON":
        (dest / "config.json").write_text("{nope")
    elif damage == "unknown model type":
        _copy(tiny_dir, tmp_path / "x", model_type="nosuch")
        dest = tmp_path / "x"
    elif damage == "no tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (dest / f).unlink(missing_ok=True)
    elif damage == "pickles only":
        (dest / "model.safetensors").rename(dest / "pytorch_model.bin")
    elif damage == "auto_map":
        dest = _copy(tiny_dir, tmp_path / "custom", model_type="mine", auto_map={
            "AutoConfig": "my_model.MyConfig", "AutoModelForCausalLM": "my_model.MyModel"})
        (dest / "my_model.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(MormError, match=message.replace("(", r"\(")):
        check_policy_source(str(dest))


def test_a_bert_is_no_causal_lm(tiny_bert):
    with pytest.raises(MormError, match="not a causal LM: its config.json names BertModel"):
        check_policy_source(tiny_bert)


def test_custom_code_passes_with_the_flag_and_is_never_run(tmp_path, tiny_dir):
    dest = _copy(tiny_dir, tmp_path / "custom", model_type="mine", auto_map={
        "AutoConfig": "my_model.MyConfig", "AutoModelForCausalLM": "my_model.MyModel"})
    with pytest.raises(MormError, match="my_model.py is not in the folder"):
        check_policy_source(str(dest), trust_remote_code=True)
    (dest / "my_model.py").write_text("raise SystemExit('remote code ran')\n")
    src = check_policy_source(str(dest), trust_remote_code=True)
    assert src.trust_remote_code and src.model_type == "mine"
    no_causal = _copy(tiny_dir, tmp_path / "enc", model_type="mine",
                      auto_map={"AutoModel": "my_model.MyModel"})
    with pytest.raises(MormError, match="names no AutoModelForCausalLM"):
        check_policy_source(str(no_causal), trust_remote_code=True)


def test_damaged_weights_are_named(tmp_path, tiny_dir):
    dest = _copy(tiny_dir, tmp_path / "pol")
    data = (dest / "model.safetensors").read_bytes()
    (dest / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(MormError, match="cannot read safetensors") as e:
        check_policy_source(str(dest))
    assert str(e.value).startswith(str(dest / "model.safetensors") + ": cannot load policy")


@pytest.mark.parametrize("name, message", [
    ("no-such-org/no-such-model", "is not in the Hugging Face cache"),
    ("nosuchpolicy", "no policy fine-tuned here"),
    ("bad name!/x", "neither a local folder nor a hub name"),
    ("./not/here/at/all", "no such folder"),
    ("a/b/c", "no such folder"),
])
def test_unknown_hub_names_offline(ws, name, message):
    with pytest.raises(MormError, match=message) as e:
        check_policy_source(name, workspace=ws)
    assert e.value.field == "policy"
    if "cache" in message:
        assert "HF_HUB_OFFLINE is set" in str(e.value)


def test_a_cached_hub_model_with_revisions(hub_cache):
    src = check_policy_source("org/tiny")
    assert (src.kind, src.ref, src.path, src.note) == ("hub", "org/tiny", str(hub_cache), "")
    assert check_policy_source("org/tiny", revision="v1").ref == "org/tiny@v1"
    assert check_policy_source("org/tiny@" + COMMIT).ref == "org/tiny@" + COMMIT
    assert split_ref("org/tiny@v1") == ("org/tiny", "v1")
    with pytest.raises(MormError, match="not in the Hugging Face cache"):
        check_policy_source("org/tiny", revision="v2")
    with pytest.raises(MormError, match="two revisions"):
        check_policy_source("org/tiny@v1", revision="main")
    with pytest.raises(MormError, match="revision must be a branch") as e:
        check_policy_source("org/tiny", revision="../../x")
    assert e.value.field == "revision"
    (hub_cache / "model.safetensors").unlink()  # only partly cached: offline, unusable
    with pytest.raises(MormError, match="no safetensors weights"):
        check_policy_source("org/tiny")


def test_online_a_model_not_cached_is_downloaded_by_the_job(hub_cache, monkeypatch):
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    src = check_policy_source("org/other", revision="v3")
    assert (src.ref, src.path) == ("org/other@v3", None)
    assert "the job downloads it from the hub" in src.note
    (hub_cache / "model.safetensors").unlink()  # the job downloads the rest
    assert check_policy_source("org/tiny").path == str(hub_cache)


def test_the_workspace_remembers_added_policies(ws, tiny_dir, hub_cache):
    def add(name, revision=None):
        remember_policy(ws, check_policy_source(name, revision, workspace=ws))

    assert [s.ref for s in known_policies(ws)] == ["smollm2"]
    add(tiny_dir)
    add("org/tiny", "v1")
    add("smollm2")  # built-in: listed anyway, not added
    add(tiny_dir)  # again: once, last
    assert [s.ref for s in known_policies(ws)] == ["smollm2", "org/tiny@v1", tiny_dir]
    assert [s.kind for s in remembered_policies(ws)] == ["hub", "folder"]
    _copy(tiny_dir, ws.root / "policies" / "run1")
    assert [s.kind for s in known_policies(ws)] == ["builtin", "workspace", "hub", "folder"]
    (ws.root / CUSTOM).write_text("{torn")
    with pytest.raises(MormError, match="cannot read the list of added policies") as e:
        known_policies(ws)
    assert e.value.file == str(ws.root / CUSTOM)
    assert [s.ref for s in known_policies(ws, remembered=False)] == ["smollm2", "run1"]


def test_a_chat_template_that_runs_away_is_refused(tmp_path, tiny_dir):
    dest = _copy(tiny_dir, tmp_path / "pol")
    (dest / "chat_template.jinja").write_text("{{ 'x' * 10000000 }}")
    with pytest.raises(MormError, match="the chat template of .* builds a value of over"):
        check_policy_source(str(dest))


def test_load_policy_takes_a_hub_revision(hub_cache):
    from morm_explorer.policy.load import load_policy

    model, _ = load_policy("org/tiny@v1")
    assert model.config.model_type == "llama"
    with pytest.raises(MormError, match="cannot load policy 'org/tiny@v2'"):
        load_policy("org/tiny@v2")
