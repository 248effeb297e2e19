"""The `morm` command, run as a user runs it (a subprocess): messages, exit codes, no traces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DEFECTS, MAX_CHARS_FOR_DEFECTS, REPO, good_pair, write_defect_file


def morm(*args, ws=None, check=False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "morm_explorer.cli"]
    if ws is not None:
        cmd += ["--workspace", str(ws)]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_every_command():
    out = morm("--help", check=True).stdout
    for cmd in ("data validate", "data summary", "data synth", "data import", "data convert",
                "data list", "demo"):
        assert f"morm {cmd}" in out


def test_validate_reports_each_defect_and_fails(tmp_path):
    path = tmp_path / "defects.jsonl"
    expected = write_defect_file(path)
    proc = morm("data", "validate", path, "--max-chars", MAX_CHARS_FOR_DEFECTS)
    assert proc.returncode == 1
    for line, _kind, fld, sev in expected:
        prefix = f"{path}:{line}:" + (f" field '{fld}'" if fld else "")
        assert any(ln.startswith(prefix) and sev in ln for ln in proc.stdout.splitlines()), \
            (prefix, proc.stdout)
    assert len({k for k, *_ in DEFECTS}) >= 12


def test_validate_json_and_clean_file(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(good_pair(i)) + "\n" for i in range(3)))
    proc = morm("data", "validate", path, "--json", check=True)
    report = json.loads(proc.stdout)
    assert report["n_valid"] == 3 and report["n_errors"] == 0


def test_missing_file_and_unknown_preset_are_messages(tmp_path):
    proc = morm("data", "validate", tmp_path / "nope.jsonl")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = morm("data", "validate", tmp_path / "nope.jsonl", "--preset", "bogus")
    assert proc.returncode == 2 and "hh-rlhf" in proc.stderr


def test_import_list_and_refuse_overwrite(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good_pair(1)) + "\n" + json.dumps(good_pair(2, prompt=1)) + "\n")
    ws = tmp_path / "ws"
    proc = morm("data", "import", path, "--name", "d", ws=ws)
    assert proc.returncode == 2 and "d.jsonl:2: field 'prompt'" in proc.stderr
    proc = morm("data", "import", path, "--name", "d", "--drop-bad", ws=ws, check=True)
    assert "dropped 1 bad rows" in proc.stdout
    assert morm("data", "import", path, "--name", "d", "--drop-bad", ws=ws).returncode == 2
    assert "d " in morm("data", "list", ws=ws, check=True).stdout


def test_convert_ratings(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps({"prompt": "P", "response": r, "ratings": {"h": v}}) + "\n"
                           for r, v in (("x", 1), ("y", 2), ("z", 3))))
    out = tmp_path / "pairs.jsonl"
    morm("data", "convert", src, "--out", out, check=True)
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.slow
def test_synth_summary_and_demo(tmp_path):
    out = tmp_path / "synth.jsonl"
    morm("data", "synth", "--out", out, "--seed", 3, check=True)
    proc = morm("data", "summary", out, "--json", check=True)
    summary = json.loads(proc.stdout)
    assert summary["n_prompts"] >= 400
    assert {r["objective"] for r in summary["per_objective"]} >= {"helpful", "harmless",
                                                                 "honest", "overall"}
    ws = tmp_path / "ws"
    assert "built demo-preferences" in morm("demo", ws=ws, check=True).stdout
    assert "already complete" in morm("demo", ws=ws, check=True).stdout


@pytest.mark.slow
def test_rm_train_eval_list_export(tmp_path, tiny_bert):
    from tests.test_reward import tiny_pairs

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    ws = tmp_path / "ws"
    proc = morm("rm", "train", "--dataset", data, "--name", "tiny", "--backbone", tiny_bert,
                "--pooling", "pooler", "--epochs", "5", "--max_length", "64",
                "--loss-weights", "helpful=1,harmless=2", ws=ws, check=True)
    assert "held-out accuracy per objective" in proc.stdout
    assert morm("rm", "train", "--dataset", data, "--name", "tiny", "--backbone", tiny_bert,
                ws=ws).returncode == 2  # exists: refused without --overwrite
    metrics = json.loads(morm("rm", "eval", "tiny", "--data", data, "--json", ws=ws,
                              check=True).stdout)
    assert metrics["split"] == "held-out" and set(metrics["objectives"]) == {"helpful",
                                                                             "harmless"}
    assert "tiny" in morm("rm", "list", ws=ws, check=True).stdout
    out = tmp_path / "exported"
    morm("rm", "export", "tiny", "--out", out, "--weights", "helpful=0.5,harmless=0.5", ws=ws,
         check=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 1 if "num_labels" in cfg else len(cfg["id2label"]) == 1
    bad = morm("rm", "train", "--dataset", data, "--epochs", "-3", ws=ws)
    assert bad.returncode == 2 and "epochs" in bad.stderr
    bad = morm("rm", "train", "--dataset", data, "--loss-weights", "helpful=abc", ws=ws)
    assert bad.returncode == 2 and "objective=number" in bad.stderr
