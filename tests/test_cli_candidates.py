"""`morm cands ...` and `morm score`, run as a user runs them."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tests.test_cli import morm

pytestmark = pytest.mark.slow  # subprocesses that import torch


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_import_list_show_score_with_weights(tmp_path, tiny_rm):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_rm, ws / "reward_models" / "rm")
    rows = [{"prompt_id": f"p{i // 3}", "prompt": f"Question {i // 3}?",
             "response": ["Sure, here is how.", "No.", "Maybe."][i % 3],
             "source": ["a", "b", "c"][i % 3]} for i in range(12)]
    out = morm("cands", "import", write(tmp_path / "c.jsonl", rows), "--name", "c", ws=ws,
               check=True).stdout
    assert "12 candidates for 4 prompts from a, b, c" in out
    assert "c " in morm("cands", "list", ws=ws, check=True).stdout
    assert "Question 0?" in morm("cands", "show", "c", ws=ws, check=True).stdout
    proc = morm("score", "--model", "rm", "--candidates", "c", "--weights",
                "helpful=1,harmless=0", "--constraint", "harmless>=-100", "--out",
                tmp_path / "s.csv", ws=ws, check=True)
    assert "scored 12 candidates" in proc.stdout and "best-of-N winners" in proc.stdout
    table = pd.read_csv(tmp_path / "s.csv")
    assert table["winner"].sum() == 4 and set(table.columns) >= {"helpful", "harmless",
                                                                  "utility", "response"}
    again = morm("score", "--model", "rm", "--candidates", "c", ws=ws, check=True).stdout
    assert "from the cache" in again


def test_bad_input_is_one_clear_message(tmp_path, tiny_rm):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_rm, ws / "reward_models" / "rm")
    bad = write(tmp_path / "bad.jsonl", [{"prompt": "x", "response": "y"}])
    proc = morm("cands", "import", bad, "--name", "c", ws=ws)
    assert proc.returncode == 2 and "bad.jsonl:1: field 'prompt_id' error" in proc.stderr
    good = write(tmp_path / "g.jsonl", [{"prompt_id": "p", "prompt": "x", "response": "y"}])
    morm("cands", "import", good, "--name", "c", ws=ws, check=True)
    for args, msg in [
        (["--weights", "funny=1"], "unknown objectives ['funny']"),
        (["--weights", "helpful"], "expected objective=number"),
        (["--weights", "helpful=1", "--constraint", "harmless<3"], "expected objective>=num"),
        (["--weights", "helpful=-1"], "must be >= 0"),
    ]:
        proc = morm("score", "--model", "rm", "--candidates", "c", *args, ws=ws)
        assert proc.returncode == 2 and msg in proc.stderr, (args, proc.stderr)
    proc = morm("score", "--model", "nope", "--candidates", "c", ws=ws)
    assert proc.returncode == 2 and "no reward model named 'nope'" in proc.stderr
    proc = morm("cands", "import", good, "--name", "c", ws=ws)
    assert proc.returncode == 2 and "exists" in proc.stderr
