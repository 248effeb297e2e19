"""Reward functions for other trainers (`morm rm export --as reward-function`): the exported
module's rewards equal the project's scores (text and conversational inputs, an encoder with a
frozen backbone, decoders with one or two fine-tuned backbones), verl's entry points give the
weighted sum, presets and refusals, and TRL's GRPOTrainer, run for two steps with the exported
functions, logs the project's scores of the completions it generated."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from morm_explorer.cli import main
from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.objectives import standardize
from morm_explorer.reward.artifact import load_reward_model, reward_stats, save_reward_model
from morm_explorer.reward.function_export import export_reward_function, function_names
from morm_explorer.scoring import score, score_candidate_set
from morm_explorer.weight_presets import WeightPreset, save_preset

PROMPTS = ["How do I boil an egg?", "Hi", "Is it safe to mix bleach and ammonia?",
           "Tell me a story."]
RESPONSES = ["Put it in boiling water for nine minutes.", "Hello.",
             "No, never: it releases toxic chloramine gas.", ""]
WEIGHTS = {"helpful": 0.7, "harmless": 0.3}


def load_module(folder):
    """The exported module, imported from its folder under a name of its own, on the CPU."""
    spec = importlib.util.spec_from_file_location(f"morm_reward_{time.time_ns()}",
                                                  folder / "morm_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DEVICE = "cpu"
    return module


def project_scores(model_dir, prompts, responses, standardized=True) -> np.ndarray:
    """The project's rewards (N, K): `scoring.score`, z-scored with the model's statistics."""
    model = load_reward_model(model_dir)
    frame = pd.DataFrame({"prompt": prompts, "response": responses})
    values = score(model, frame).to_numpy(np.float64)
    return standardize(values, model.stats) if standardized else values


@pytest.fixture(scope="module")
def exported(tiny_rm, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "rf"
    return export_reward_function(tiny_rm, out, weights=WEIGHTS)


@pytest.fixture(params=[1, 2], ids=["one-backbone", "two-backbones"])
def decoder_rm(request, tmp_path):
    """A Llama reward model saved with fine-tuned backbone weights (one, or one per objective
    with different weights), so the export must carry what training changed."""
    from transformers import LlamaConfig, LlamaModel

    from morm_explorer.reward.backbone import Backbone
    from morm_explorer.reward.config import ModelConfig
    from morm_explorer.reward.model import RewardModel
    from tests.test_export import TEMPLATES, _tiny_tokenizer

    tok = _tiny_tokenizer(TEMPLATES["ends_in_newline"])
    torch.manual_seed(2)
    LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                           max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    cfg = ModelConfig(objectives=("helpful", "harmless"), backbone=str(tmp_path / "base"),
                      max_length=40)
    model = RewardModel(cfg, [Backbone(cfg.backbone, "auto", 40)
                              for _ in range(request.param)])
    with torch.no_grad():  # "fine-tuning": every backbone's weights move, differently
        for p in list(model.heads.parameters()) + list(model.backbones.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    stats = reward_stats(model.score(PROMPTS * 3, RESPONSES[::-1] * 3))
    return save_reward_model(model, tmp_path / "rm", training={}, metrics={}, stats=stats,
                             history=[], data={}, backbone_trained=True)


def test_rewards_equal_morm_score(exported, tiny_rm, ws, tmp_path):
    # `morm score`'s path: a stored candidate set scored into the cache, standardized
    cset = from_records([{"prompt_id": f"p{i}", "prompt": p, "response": r}
                         for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))])
    save_candidate_set(ws, "probe", cset)
    result = score_candidate_set(ws, tiny_rm, "probe", device="cpu")
    expected = standardize(result.values.astype(np.float64), result.stats)  # (N, K)

    moved = tmp_path / "elsewhere"  # the folder is self-contained: it works where it is moved
    shutil.copytree(exported, moved)
    module = load_module(moved)
    assert module.OBJECTIVES == ["helpful", "harmless"] and module.STANDARDIZED
    np.testing.assert_allclose(module.helpful(PROMPTS, RESPONSES), expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(module.harmless(PROMPTS, RESPONSES), expected[:, 1], atol=1e-5)
    assert module.REWARD_FUNCS == [module.helpful, module.harmless]
    assert module.REWARD_WEIGHTS == [0.7, 0.3]

    # conversational prompts and completions, as TRL passes them
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
             for p in PROMPTS]
    replies = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    np.testing.assert_allclose(module.helpful(chats, replies, completion_ids=None,
                                              trainer_state=None), expected[:, 0], atol=1e-5)

    # verl: the weighted sum, the prompt from extra_info
    w = np.array([0.7, 0.3])
    one = module.compute_score("demo", RESPONSES[0], None, {"prompt": PROMPTS[0]})
    assert isinstance(one, float) and one == pytest.approx(float(expected[0] @ w), abs=1e-5)
    batch = module.compute_score_batch(["demo"] * 4, RESPONSES, [None] * 4,
                                       [{"question": p} for p in PROMPTS])
    np.testing.assert_allclose(batch, expected @ w, atol=1e-5)
    with pytest.raises(ValueError, match="extra_info"):
        module.compute_score("demo", "x", None, {"index": 3})
    assert module.score([], []) == []


def test_export_folder(exported, tiny_rm):
    info = json.loads((exported / "morm_export.json").read_text())
    assert info["functions"] == {"helpful": "helpful", "harmless": "harmless"}
    assert info["weights"] == WEIGHTS and info["standardized"] is True
    assert info["self_check_max_abs_diff"] < 1e-4
    weights = [f for f in exported.rglob("*") if f.suffix in (".bin", ".pt", ".pth", ".pkl",
                                                                ".ckpt", ".safetensors")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    assert (exported / "morm_reward.py").read_text().startswith('"""Reward functions')
    readme = (exported / "README.md").read_text()
    assert "reward_funcs=[helpful, harmless]" in readme
    assert "reward_weights=[0.7, 0.3]" in readme and "compute_score" in readme
    # the source model folder is left as it was
    assert json.loads((tiny_rm / "config.json").read_text())["model"]["backbone"] != "./backbone"


def test_decoder_with_fine_tuned_backbones(decoder_rm, tmp_path):
    out = export_reward_function(decoder_rm, tmp_path / "rf", standardize=False)
    module = load_module(out)
    assert not module.STANDARDIZED and module.WEIGHTS == [0.5, 0.5]
    np.testing.assert_allclose(module.score(PROMPTS, RESPONSES),
                               project_scores(decoder_rm, PROMPTS, RESPONSES, False), atol=1e-5)


def test_function_names():
    assert function_names(["class", "score", "a-b", "a_b", "helpful"]) == {
        "class": "class_reward", "score": "score_reward", "a-b": "a_b", "a_b": "a_b_reward",
        "helpful": "helpful"}


def test_cli_presets_and_refusals(tiny_rm, ws, tmp_path, capsys):
    def export(*args) -> int:
        return main(["--workspace", str(ws.root), "rm", "export", str(tiny_rm), *args])

    out = tmp_path / "rf"
    assert export("--as", "reward-function", "--out", str(out), "--preset",
                  "harmless-first") == 0
    assert "from morm_reward import helpful, harmless" in capsys.readouterr().out
    info = json.loads((out / "morm_export.json").read_text())
    assert info["weights"] == {"helpful": 0.4, "harmless": 0.6} and info["standardized"]
    assert info["preset"] == "harmless-first"

    save_preset(ws, WeightPreset("raw", {"helpful": 1.0, "harmless": 3.0}, standardized=False))
    assert export("--as", "reward-function", "--out", str(out), "--preset", "raw",
                  "--normalize") == 0
    info = json.loads((out / "morm_export.json").read_text())
    assert info["weights"] == {"helpful": 0.25, "harmless": 0.75} and not info["standardized"]

    save_preset(ws, WeightPreset("cheb", {"helpful": 1.0}, scalarizer="chebyshev"))
    for args, message in [(("--preset", "cheb"), "chebyshev"),
                          (("--preset", "nope"), "no weight preset named 'nope'"),
                          (("--preset", "raw", "--weights", "helpful=1"), "not both"),
                          (("--weights", "kind=1"), "unknown objectives")]:
        assert export("--as", "reward-function", "--out", str(tmp_path / "bad"), *args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert export("--out", str(tmp_path / "bad"), "--standardize") == 2
    assert "reward-function only" in capsys.readouterr().err


def test_refuses_standardizing_without_statistics(tiny_rm, tmp_path):
    src = tmp_path / "rm"
    shutil.copytree(tiny_rm, src)
    config = json.loads((src / "config.json").read_text())
    config["stats"] = None
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(MormError, match="no score statistics"):
        export_reward_function(src, tmp_path / "rf", standardize=True)
    out = export_reward_function(src, tmp_path / "rf")  # by default: raw rewards
    assert json.loads((out / "morm_export.json").read_text())["standardized"] is False


def test_grpo_logs_the_project_scores(exported, tiny_rm, tmp_path):
    """Two GRPO steps of a tiny random Llama on the CPU, rewarded by the exported functions:
    each step's logged `rewards/<objective>/mean` is the mean of the project's scores of that
    step's completions."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tests.test_policy import _save_tiny

    policy = _save_tiny(tmp_path / "policy")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.pad_token = tokenizer.eos_token
    module = load_module(exported)
    calls: list[tuple[list, list]] = []

    def recorded(func):
        @functools.wraps(func)  # TRL logs under the function's __name__
        def wrapper(prompts, completions, **kwargs):
            if func is module.helpful:
                calls.append((prompts, completions))
            return func(prompts, completions, **kwargs)
        return wrapper

    prompts = [[{"role": "user", "content": p}]
               for p in ("hello world", "how do i boil an egg ?", "the sun is hot", "yes")]
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=2, logging_steps=1,
                      per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, learning_rate=1e-3, report_to="none",
                      use_cpu=True, bf16=False, save_strategy="no", seed=0,
                      reward_weights=module.REWARD_WEIGHTS)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy),
                          processing_class=tokenizer,
                          reward_funcs=[recorded(f) for f in module.REWARD_FUNCS], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}))
    trainer.train()

    logs = [h for h in trainer.state.log_history if "rewards/helpful/mean" in h]
    assert len(logs) == len(calls) == 2
    for log, (chats, completions) in zip(logs, calls, strict=True):
        texts = [c[0]["content"] for c in completions]
        assert len(texts) == 4 and len(set(texts)) > 1  # sampled, not all alike
        expected = project_scores(tiny_rm, [c[-1]["content"] for c in chats], texts)  # (4, K)
        assert log["rewards/helpful/mean"] == pytest.approx(expected[:, 0].mean(), abs=1e-5)
        assert log["rewards/harmless/mean"] == pytest.approx(expected[:, 1].mean(), abs=1e-5)
        assert log["reward"] == pytest.approx((expected @ [0.7, 0.3]).mean(), abs=1e-5)


def test_loading_reads_the_backbone_beside_the_model_and_leaves_the_working_directory(
        exported, tmp_path, monkeypatch):
    """The exported config names its backbone relative to the model folder; the loader reads it
    from there, from any working directory, and never changes the process's directory."""
    assert json.loads((exported / "model" / "config.json").read_text()
                      )["model"]["backbone"] == "../backbone"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    module = load_module(exported)
    module.helpful(["Hi?"], ["Hello."])
    assert Path.cwd() == elsewhere
