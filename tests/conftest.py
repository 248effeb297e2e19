"""Shared test set-up: offline hubs, a fresh workspace per test, and defect fixtures."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A developer's shell may point at a Ray cluster: tests choose their job backend themselves.
for _var in ("RAY_ADDRESS", "MORM_BACKEND"):
    os.environ.pop(_var, None)
# The app builds the full demo (models, samples, PPO runs) in a background job on first start;
# tests build what they need themselves.
os.environ["MORM_DEMO"] = "data"
# A worker the app or a command starts for a test exits soon after its queue is empty.
os.environ["MORM_WORKER_IDLE_EXIT"] = "20"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    from morm_explorer.workspace import Workspace

    root = tmp_path / "ws"
    monkeypatch.setenv("MORM_WORKSPACE", str(root))
    return Workspace(root)


@pytest.fixture
def no_worker(monkeypatch):
    """Submitted jobs stay queued: no worker process is started."""
    from morm_explorer.jobs.backend import LocalBackend

    monkeypatch.setattr(LocalBackend, "ensure_worker", lambda self: False)


@pytest.fixture(scope="module")
def ray_two_nodes(tmp_path_factory):
    """A started two-node Ray cluster for a module's (slow) tests: the head as root, node 2
    as another user who cannot read pytest's base temp folder, so no test's workspace
    (tests/ray_cluster.py). Node 2 has the resource {"node2": 1}."""
    import time

    from tests.ray_cluster import TwoNodeCluster, skip_reason

    if reason := skip_reason():
        pytest.skip(reason)
    cluster = TwoNodeCluster(tmp_path_factory.mktemp("ray-2-nodes"),
                             hidden=[tmp_path_factory.getbasetemp()])
    t0 = time.monotonic()
    cluster.start(timeout=120)
    print(f"\ntwo-node Ray cluster up in {time.monotonic() - t0:.1f} s")
    yield cluster
    cluster.stop()


def run_concurrently(*calls: Callable[[], Any]) -> list:
    """Run each call in its own thread, all started before any is waited for; returns their
    results in the order of ``calls`` and re-raises the first exception a call raised."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:  # a thread's exception is lost unless handed over
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def open_app_page(page: str, timeout: float = 60, **state):
    """The app under AppTest, run once, then switched to ``page`` with ``state`` put in its
    session state first; asserts the page ran without an exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    at.run()
    for k, v in state.items():
        at.session_state[k] = v
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def good_pair(i: int = 0, **over) -> dict:
    rec = {"id": f"p{i}", "prompt": f"How do I boil an egg, take {i}?",
           "response_a": "Put it in boiling water for nine minutes.",
           "response_b": "I can't help with that.",
           "labels": {"helpful": "a", "harmless": "tie"}, "category": "howto"}
    rec.update(over)
    return rec


# Each defect: (raw line bytes, the field the report must name or None, severity).
DEFECTS: list[tuple[str, bytes, str | None, str]] = [
    ("malformed JSON", b'{"prompt": "x", "response_a": "y",', None, "error"),
    ("not an object", b'["prompt", "response_a"]', None, "error"),
    ("missing field", json.dumps({k: v for k, v in good_pair(2).items()
                                  if k != "response_b"}).encode(), "response_b", "error"),
    ("wrong type", json.dumps(good_pair(3, prompt=42)).encode(), "prompt", "error"),
    ("empty prompt", json.dumps(good_pair(4, prompt="   ")).encode(), "prompt", "error"),
    ("identical responses", json.dumps(good_pair(5, response_b="Put it in boiling water for "
                                                 "nine minutes.")).encode(),
     "response_b", "error"),
    ("unknown label value", json.dumps(good_pair(6, labels={"helpful": "c"})).encode(),
     "labels.helpful", "error"),
    ("labels not an object", json.dumps(good_pair(7, labels=["a"])).encode(), "labels", "error"),
    ("invalid objective name", json.dumps(good_pair(8, labels={"be nice!": "a"})).encode(),
     "labels.be nice!", "error"),
    ("non-UTF-8 bytes", json.dumps(good_pair(9)).encode().replace(b"boil", b"b\xffil"),
     None, "error"),
    ("response over size limit", json.dumps(good_pair(10, response_a="x" * 2000)).encode(),
     "response_a", "error"),
    ("duplicate id", json.dumps(good_pair(0, prompt="A different prompt")).encode(), "id",
     "error"),
    ("id wrong type", json.dumps(good_pair(12, id=[1])).encode(), "id", "error"),
    ("meta not an object", json.dumps(good_pair(13, meta="x")).encode(), "meta", "error"),
    ("empty response", json.dumps(good_pair(14, response_b="")).encode(), "response_b",
     "warning"),
    ("unknown field", json.dumps(good_pair(15, extra=1)).encode(), "extra", "warning"),
]
MAX_CHARS_FOR_DEFECTS = 1000


def write_defect_file(path: Path) -> list[tuple[int, str, str | None, str]]:
    """A JSONL file with one good line, then one line per defect; returns the expectations
    as (line, kind, field, severity)."""
    lines = [json.dumps(good_pair(0)).encode()]
    expected = []
    for kind, raw, fld, sev in DEFECTS:
        lines.append(raw)
        expected.append((len(lines), kind, fld, sev))
    lines.append(json.dumps(good_pair(99)).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return expected


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with random weights and the MiniLM tokenizer, saved as a folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from morm_explorer.models import resolve_backbone

    tok = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=128))
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_rm(tiny_bert, tmp_path_factory):
    """A frozen-backbone reward model (helpful, harmless) on the tiny BERT, saved as a folder."""
    from morm_explorer.reward.train import train_reward_model
    from tests.test_reward import tiny_cfg, tiny_pairs

    root = tmp_path_factory.mktemp("tiny-rm")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    out = root / "rm"
    train_reward_model(tiny_cfg(str(data), tiny_bert, epochs=3), out)
    return out
