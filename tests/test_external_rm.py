"""External reward models: tiny random `AutoModelForSequenceClassification` folders (BERT with
1 and 3 labels, a Llama with 1 label and a chat template) registered with `add_external`,
loaded with `load_reward_model`, and scored against transformers' own logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.objectives import standardize
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.external import ExternalConfig, ExternalRewardModel, add_external
from morm_explorer.reward.report import list_reward_models, load_model_report
from morm_explorer.scoring import model_fingerprint, score_candidate_set
from tests.conftest import good_pair

PROMPTS = ["How do I boil an egg?", "hello world", "Tell me about the sun, please.", "yes"]
RESPONSES = ["Put it in boiling water for nine minutes.", "hello!", "It is hot.",
             "I can't help with that. " * 5]
LABELS3 = {0: "helpful", 1: "harmless", 2: "honest"}


def save_bert(path, num_labels: int = 1, id2label: dict | None = None, seed: int = 0) -> str:
    """A 2-layer BERT classifier with random weights and the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from morm_explorer.models import resolve_backbone

    tok = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=num_labels,
                        **({"id2label": id2label} if id2label else {}))
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def save_llama(path, chat_template: bool = True, pad_token_id: int | None = None) -> str:
    """A 2-layer Llama classifier with one label and the word-level tokenizer of the policy
    tests (its chat template ends each turn with <eos>)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tests.test_policy import TEMPLATE, _tokenizer

    tok = _tokenizer(TEMPLATE if chat_template else None)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=pad_token_id, num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("external")
    return {"bert1": save_bert(root / "bert1"),
            "bert3": save_bert(root / "bert3", 3, LABELS3, seed=1),
            "llama": save_llama(root / "llama"),
            "llama-pad": save_llama(root / "llama-pad", pad_token_id=1),
            "llama-plain": save_llama(root / "llama-plain", chat_template=False)}


def add_reference(ws, name: str = "ref") -> str:
    """A candidate set of the test texts (and a few more) to compute statistics on."""
    responses = RESPONSES[1:] + RESPONSES[:1] + RESPONSES * 2
    records = [{"prompt_id": f"p{i}", "prompt": p, "response": r}
               for i, (p, r) in enumerate(zip(PROMPTS * 3, responses, strict=True))]
    save_candidate_set(ws, name, from_records(records))
    return name


def transformers_logits(folder: str) -> np.ndarray:
    """Each conversation through transformers alone, one at a time: (N, K)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows = []
    with torch.no_grad():
        for p, r in zip(PROMPTS, RESPONSES, strict=True):
            if model.config.model_type == "bert":
                enc = tok(p, r, return_tensors="pt")
            elif tok.chat_template:
                msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                enc = tok.apply_chat_template(msgs, tokenize=True, return_tensors="pt",
                                              return_dict=True)
            else:
                enc = tok(f"{p}\n\n{r}", return_tensors="pt")
            rows.append(model(**enc).logits[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("which", ["bert1", "bert3", "llama", "llama-pad", "llama-plain"])
def test_scores_are_transformers_logits(ws, folders, which):
    add_reference(ws)
    path = add_external(ws, "ext", ExternalConfig(model=folders[which]), reference="ref")
    model = load_reward_model(path)
    assert isinstance(model, ExternalRewardModel)
    raw = model.score(PROMPTS, RESPONSES, batch_size=3)  # (N, K), padded batches
    expected = transformers_logits(folders[which])
    assert raw.shape == expected.shape
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    # standardized with the stored statistics: (logit - mean) / std
    config = json.loads((path / "config.json").read_text())
    mean, std = np.array(config["stats"]["mean"]), np.array(config["stats"]["std"])
    assert model.stats == config["stats"]
    z = standardize(raw, model.stats)
    np.testing.assert_allclose(z, (raw - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(z * std + mean, expected, atol=1e-5)


def test_manifest_names_objectives_source_and_input(ws, folders):
    add_reference(ws)
    path = add_external(ws, "three", ExternalConfig(model=folders["bert3"]), reference="ref")
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "external" and config["model"]["objectives"] == list(
        LABELS3.values())
    assert config["source"]["model"] == folders["bert3"] and config["source"]["local"]
    assert [x["objective"] for x in config["labels"]] == ["helpful", "harmless", "honest"]
    assert config["input"] == "pair" and config["reference_set"]["name"] == "ref"
    assert config["stats"]["n"] == 12 and len(config["stats"]["mean"]) == 3
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]  # no weights copied
    # the statistics are those of the model's raw scores on the reference set
    model = load_reward_model(path)
    from morm_explorer.data.candidates import load_candidate_set

    frame = load_candidate_set(ws, "ref").frame
    raw = model.score(list(frame["prompt"]), list(frame["response"]))
    np.testing.assert_allclose(config["stats"]["mean"], raw.mean(0), atol=1e-5)

    renamed = add_external(ws, "renamed", ExternalConfig(
        model=folders["bert3"], objectives=("a", "b", "c")), reference="ref")
    assert load_reward_model(renamed).objectives == ["a", "b", "c"]
    one = add_external(ws, "one", ExternalConfig(model=folders["bert1"], objective="helpful"),
                       reference="ref")
    assert load_reward_model(one).objectives == ["helpful"]
    llama = json.loads((add_external(ws, "llama", ExternalConfig(model=folders["llama"]),
                                     reference="ref") / "config.json").read_text())
    assert llama["input"] == "chat" and llama["model"]["objectives"] == ["reward"]
    plain = json.loads((add_external(ws, "plain", ExternalConfig(
        model=folders["llama-plain"]), reference="ref") / "config.json").read_text())
    assert plain["input"] == "plain" and "no chat template" in plain["input_note"]


def test_listed_reported_and_scored_like_a_trained_model(ws, folders):
    add_reference(ws)
    add_external(ws, "ext", ExternalConfig(model=folders["bert3"]), reference="ref")
    (row,) = list_reward_models(ws)
    assert row["name"] == "ext" and row["kind"] == "external"
    assert row["source"] == folders["bert3"] and row["objectives"] == list(LABELS3.values())
    report = load_model_report("ext", ws)
    assert list(report["stats"].index) == list(LABELS3.values()) and report["accuracy"].empty
    scores = score_candidate_set(ws, "ext", "ref", device="cpu")
    assert scores.values.shape == (12, 3) and not scores.cached
    assert scores.reference is None and scores.distance is None  # no training texts known
    again = score_candidate_set(ws, "ext", "ref", device="cpu")
    assert again.cached and np.array_equal(again.values, scores.values)


def test_changed_weights_change_the_fingerprint(ws, folders, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(folders["bert1"], folder)
    add_reference(ws)
    path = add_external(ws, "ext", ExternalConfig(model=str(folder)), reference="ref")
    before = model_fingerprint(path)
    save_bert(folder, seed=5)
    assert model_fingerprint(path) != before


def test_default_reference_is_the_demo(ws, folders):
    with pytest.raises(MormError, match="pass --reference"):
        add_external(ws, "ext", ExternalConfig(model=folders["bert1"]))
    from morm_explorer.demo import ensure_demo

    ensure_demo(ws)
    path = add_external(ws, "ext", ExternalConfig(model=folders["bert1"]))
    config = json.loads((path / "config.json").read_text())
    assert config["reference_set"]["name"] == "demo-candidates"
    assert config["reference_set"]["kind"] == "candidate set"


def test_dataset_as_reference(ws, folders):
    from morm_explorer.demo import ensure_demo

    ensure_demo(ws)
    path = add_external(ws, "ext", ExternalConfig(model=folders["bert1"]),
                        reference="demo-preferences")
    config = json.loads((path / "config.json").read_text())
    assert config["reference_set"]["kind"] == "dataset"
    assert 0 < config["stats"]["n"] <= 2000


def test_registration_refusals(ws, folders, tmp_path):
    add_reference(ws)
    with pytest.raises(MormError, match="--objectives has 2 names for the model's 3 outputs"):
        add_external(ws, "x", ExternalConfig(model=folders["bert3"], objectives=("a", "b")),
                     reference="ref")
    with pytest.raises(MormError, match="not --objective"):
        add_external(ws, "x", ExternalConfig(model=folders["bert3"], objective="a"),
                     reference="ref")
    with pytest.raises(MormError, match="no candidate set or dataset named 'nope'"):
        add_external(ws, "x", ExternalConfig(model=folders["bert1"]), reference="nope")
    with pytest.raises(MormError, match="--revision applies to hub names"):
        add_external(ws, "x", ExternalConfig(model=folders["bert1"], revision="main"),
                     reference="ref")
    add_external(ws, "x", ExternalConfig(model=folders["bert1"]), reference="ref")
    with pytest.raises(MormError, match="exists; pass --overwrite"):
        add_external(ws, "x", ExternalConfig(model=folders["bert1"]), reference="ref")
    add_external(ws, "x", ExternalConfig(model=folders["bert3"]), reference="ref",
                 overwrite=True)
    assert load_reward_model(ws.root / "reward_models" / "x").objectives == list(
        LABELS3.values())


def test_a_causal_lm_is_not_a_reward_model(ws, tmp_path):
    from tests.test_policy import _save_tiny

    add_reference(ws)
    folder = _save_tiny(tmp_path / "lm")
    with pytest.raises(MormError, match="no trained output layer"):
        add_external(ws, "x", ExternalConfig(model=folder), reference="ref")
    assert not (ws.root / "reward_models" / "x").exists()


def test_auto_map_loads_only_with_the_flag(ws, folders, tmp_path):
    """With the flag the manifest records the consent (the code itself is not run here: the
    mapping points to a file the folder lacks, so transformers refuses to load it)."""
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(folders["bert1"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(config))
    add_reference(ws)
    with pytest.raises(MormError, match="auto_map.*--trust-remote-code"):
        add_external(ws, "x", ExternalConfig(model=str(folder)), reference="ref")
    with pytest.raises(MormError, match="cannot load reward model"):
        add_external(ws, "x", ExternalConfig(model=str(folder), trust_remote_code=True),
                     reference="ref")


def test_cli_add_list_score_and_no_export(ws, folders, capsys, tmp_path):
    from morm_explorer.cli import main

    add_reference(ws)
    root = ["--workspace", str(ws.root)]
    assert main([*root, "rm", "add", "ext", "--model", folders["llama"], "--objective",
                 "helpful", "--reference", "ref", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "registered" in out and "helpful from" in out and "chat template" in out
    assert main([*root, "rm", "list"]) == 0
    out = capsys.readouterr().out
    assert "ext" in out and "external" in out and f"source: {folders['llama']}" in out
    assert main([*root, "score", "--model", "ext", "--candidates", "ref", "--device",
                 "cpu"]) == 0
    assert "scored 12 candidates of 'ref' with 'ext'" in capsys.readouterr().out
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(good_pair(i)) + "\n" for i in range(6)))
    assert main([*root, "rm", "eval", "ext", "--data", str(pairs)]) == 0
    assert "helpful" in capsys.readouterr().out  # the pairs' helpful labels, 6 decided
    assert main([*root, "rm", "list"]) == 0
    assert "evaluated on" in capsys.readouterr().out
    assert main([*root, "rm", "export", "ext", "--out", str(tmp_path / "out")]) == 2
    assert "export writes models trained here" in capsys.readouterr().err
    assert main([*root, "rm", "add", "x", "--model", folders["bert3"], "--objectives",
                 "a,b", "--reference", "ref"]) == 2
    assert "--objectives has 2 names for the model's 3 outputs" in capsys.readouterr().err
