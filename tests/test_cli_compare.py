"""`morm compare`, `morm session` and `morm report`, called as `main` is by the `morm` command:
a real comparison of two tiny policies, sessions on a small candidate set, the exports and
reports they write, and bad input answered by one message naming the field (exit 2)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from morm_explorer.cli import main
from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.data.loaders import load_preference_data
from morm_explorer.evaluation.sessions import create_session, get_session, join, vote
from morm_explorer.workspace import Workspace
from tests.test_compare import _perturbed_copy
from tests.test_policy import _save_tiny


def morm(ws: Workspace, *args, capsys) -> tuple[int, str, str]:
    rc = main(["--workspace", str(ws.root), *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def compared_root(tiny_rm, tmp_path_factory):
    """A workspace with comparison "ab" of a tiny policy and a perturbed copy of it, made by
    `morm compare run` (in the foreground, through the job system)."""
    tmp = tmp_path_factory.mktemp("cmp")
    ws = Workspace(tmp / "ws")
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    base = _save_tiny(tmp / "base")
    tuned = _perturbed_copy(base, tmp / "tuned", base)
    rc = main(["--workspace", str(ws.root), "compare", "run", "--name", "ab", "--policies",
               f"{base},{tuned}", "--reward-model", "rm", "--judge_model", "rm", "--limit", "3",
               "--n", "2", "--max-new-tokens", "4", "--device", "cpu", "--n-boot", "200"])
    assert rc == 0
    return ws.root, base, tuned


@pytest.fixture
def compared(compared_root, tmp_path, monkeypatch):
    """A copy of the comparison's workspace of this test's own."""
    root = tmp_path / "ws"
    shutil.copytree(compared_root[0], root)
    monkeypatch.setenv("MORM_WORKSPACE", str(root))
    return Workspace(root)


@pytest.fixture
def rated(ws):
    """Session "s" on a set of two policies, three prompts, two raters' votes."""
    recs = [{"prompt_id": f"p{i}", "prompt": f"Question {i}?", "response": f"{pol} says {i}",
             "source": pol, "category": "test"} for i in range(3) for pol in ("x", "y")]
    save_candidate_set(ws, "xy", from_records(recs))
    create_session(ws, "s", "xy", objectives=["helpful", "harmless"])
    for rater, answer in (("ann", "a"), ("bob", "b")):
        join(ws, "s", rater)
        for item in range(1, 4):
            vote(ws, "s", item, rater, {"helpful": answer, "harmless": "tie"},
                 comment="short" if item == 1 else "")
    return ws


@pytest.mark.slow
def test_compare_run_list_show(compared, capsys):
    rc, out, _ = morm(compared, "compare", "list", capsys=capsys)
    assert rc == 0 and out.startswith("ab ") and "base, tuned" in out and "judge rm" in out
    rc, out, _ = morm(compared, "compare", "show", "ab", "--n-boot", 200, capsys=capsys)
    assert rc == 0
    assert "scores by the training reward model rm" in out and "held-out judge rm" in out
    assert "win rates against base" in out
    assert ["tuned", "helpful"] in [line.split()[:2] for line in out.splitlines()]
    rc, out, _ = morm(compared, "compare", "show", "ab", "--by-category", "--examples", 1,
                      "--objective", "harmless", "--n-boot", 50, capsys=capsys)
    assert rc == 0 and "\ncategory factual:\n" in out and "] tuned - base on harmless:" in out
    assert out.count("(tuned, sample ") == 2  # the example prompt's samples, in full
    rc, out, _ = morm(compared, "compare", "show", "ab", "--baseline", "tuned", "--json",
                      "--n-boot", 200, capsys=capsys)
    doc = json.loads(out)
    assert doc["baseline"] == "tuned" and [w["policy"] for w in doc["wins"]] == ["base"] * 2
    summary = {r["policy"]: r for r in doc["summary"]}
    assert set(summary) == {"base", "tuned"} and summary["base"]["n_prompts"] == 3
    assert summary["base"]["helpful_low"] <= summary["base"]["helpful"]
    assert doc["judge_wins"] is not None and 0 <= doc["wins"][0]["rate"] <= 1


@pytest.mark.slow
def test_compare_submit_queues_a_job(compared, compared_root, capsys, no_worker):
    from morm_explorer.jobs.store import JobStore

    _, base, tuned = compared_root
    rc, out, _ = morm(compared, "compare", "run", "--name", "again", "--policies",
                      f"{tuned},{base}", "--reward-model", "rm", "--submit", capsys=capsys)
    assert rc == 0 and "submitted job" in out
    job = JobStore(compared).list(kind="compare", status="queued")[0]
    assert job.spec["policies"] == [tuned, base] and job.spec["limit"] == 24
    assert job.spec["sampling"]["n"] == 2 and job.spec["sampling"]["max_new_tokens"] == 64


@pytest.mark.slow
def test_report_comparison_writes_one_html_file(compared, tmp_path, capsys):
    out_file = tmp_path / "r" / "ab.html"
    out_file.parent.mkdir()
    rc, out, _ = morm(compared, "report", "comparison", "ab", "--out", out_file, "--baseline",
                      "tuned", "--examples", "factual-00", "--n-boot", 100, capsys=capsys)
    assert rc == 0 and str(out_file) in out
    page = out_file.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Win rates against tuned" in page
    assert "<h3>factual-00" in page
    assert [p.name for p in out_file.parent.iterdir()] == ["ab.html"]  # no temp file left


@pytest.mark.slow
def test_session_from_a_comparison(compared, capsys):
    rc, out, _ = morm(compared, "session", "create", "s1", "--comparison", "ab",
                      "--reveal-after-vote", "--raters", "ann,bob", capsys=capsys)
    assert rc == 0 and "3 pairs" in out and "?session=s1&rater=ann" in out
    spec = get_session(compared, "s1").spec
    assert spec.candidate_set == "compare-ab" and spec.objectives == ("helpful", "harmless")
    assert spec.reveal_after_vote and spec.raters == ("ann", "bob")


@pytest.mark.slow
@pytest.mark.parametrize("args,field,msg", [
    (["compare", "show", "nope"], "comparison", "no comparison named 'nope'; saved: ab"),
    (["compare", "show", "ab", "--baseline", "zz"], "baseline", "not one of"),
    (["compare", "show", "ab", "--n-boot", "0"], "n_boot", ">= 1"),
    (["compare", "show", "ab", "--examples", "2", "--objective", "funny"], "objective",
     "not one of"),
    (["report", "comparison", "ab", "--out", "r.pdf"], "out", "ending in .html"),
    (["report", "comparison", "ab", "--objective", "funny"], "objective", "not one of"),
    (["report", "comparison", "ab", "--examples", "p9"], "examples", "not in the comparison"),
    (["report", "comparison", "ab", "--soup", "nope"], "soup", "no soup samples"),
    (["compare", "run", "--name", "ab", "--policies", "smollm2,smollm2", "--reward-model",
      "rm"], "policies", "listed twice"),
    (["compare", "run", "--name", "ab", "--policies", "smollm2", "--reward-model", "rm"],
     "policies", "compare 2 to 4 policies"),
    (["compare", "run", "--name", "ab", "--policies", "smollm2,/no/such", "--reward-model",
      "rm"], "policy", ""),
    (["session", "create", "s", "--comparison", "ab", "--candidates", "compare-ab"],
     "candidates", "one of the two"),
    (["session", "create", "s", "--comparison", "ab", "--policies", "base,zz"], "policies",
     "not sources"),
])
def test_bad_compare_input_is_one_clear_message(compared, capsys, args, field, msg):
    rc, out, err = morm(compared, *args, capsys=capsys)
    assert rc == 2 and f"field '{field}'" in err and msg in err, err


@pytest.mark.slow
def test_compare_run_refuses_before_queueing(compared, compared_root, capsys, no_worker):
    from morm_explorer.jobs.store import JobStore

    _, base, tuned = compared_root
    pols = f"{base},{tuned}"
    for args, msg in (([pols, "--reward-model", "nope"], "field 'reward_model'"),
                      ([pols, "--reward-model", "rm", "--judge-model", "gone"],
                       "field 'judge_model'"),
                      ([pols, "--reward-model", "rm", "--prompts", "/no/file.jsonl"],
                       "/no/file.jsonl: no such file"),
                      ([pols, "--reward-model", "rm", "--limit", "-1"], "field 'limit'"),
                      ([pols, "--reward-model", "rm", "--top-p", "2"], "field 'top_p'")):
        rc, _, err = morm(compared, "compare", "run", "--name", "x", "--policies", *args,
                          "--submit", capsys=capsys)
        assert rc == 2 and msg in err, err
    rc, _, err = morm(compared, "compare", "run", "--name", "ab", "--policies", pols,
                      "--reward-model", "rm", "--submit", capsys=capsys)
    assert rc == 2 and "exists" in err and "--overwrite" in err
    assert JobStore(compared).list(kind="compare", status="queued") == []


def test_session_create_list_close(ws, capsys):
    recs = [{"prompt_id": f"p{i}", "prompt": f"Q{i}?", "response": f"{pol} {i}",
             "source": pol} for i in range(4) for pol in ("x", "y", "z")]
    save_candidate_set(ws, "xyz", from_records(recs))
    rc, out, _ = morm(ws, "session", "create", "t", "--candidates", "xyz", "--policies", "x,z",
                      "--objectives", "helpful", "--limit-prompts", 2, "--seed", 3,
                      capsys=capsys)
    assert rc == 0 and "2 pairs from 2 prompts" in out and "never shown" in out
    spec = get_session(ws, "t").spec
    assert spec.policies == ("x", "z") and spec.seed == 3 and not spec.reveal_after_vote
    rc, out, _ = morm(ws, "session", "list", capsys=capsys)
    assert out.startswith("t ") and "open" in out and "0 votes" in out
    assert morm(ws, "session", "close", "t", capsys=capsys)[0] == 0
    sessions = json.loads(morm(ws, "session", "list", "--json", capsys=capsys)[1])
    assert sessions[0]["status"] == "closed" and sessions[0]["n_items"] == 2


def test_session_results(rated, capsys):
    rc, out, _ = morm(rated, "session", "results", "s", capsys=capsys)
    assert rc == 0 and "3 pairs, 6 votes from 2 raters" in out
    assert "win rates per objective" in out and "fleiss_kappa" in out
    assert "raters vs the reward model" not in out
    last = [line for line in out.splitlines() if line.strip().startswith("ann")][0]
    assert last.split()[-2].startswith("20")  # last_vote_at as a date, not a Unix timestamp
    doc = json.loads(morm(rated, "session", "results", "s", "--json", capsys=capsys)[1])
    helpful = [w for w in doc["win_rates"] if w["objective"] == "helpful"]
    assert [w["wins"] + w["losses"] for w in helpful] == [6] and len(doc["progress"]) == 2


def test_session_exports(rated, tmp_path, capsys):
    rc, out, _ = morm(rated, "session", "export", "s", "--out", tmp_path / "v.jsonl",
                      capsys=capsys)
    assert rc == 0 and "wrote 6 records" in out
    pairs = load_preference_data(tmp_path / "v.jsonl", fmt="jsonl").records
    assert len(pairs) == 6 and {p["labels"]["harmless"] for p in pairs} == {"tie"}
    morm(rated, "session", "export", "s", "--out", tmp_path / "v.txt", "--format", "csv",
         capsys=capsys)
    rows = list(csv.DictReader((tmp_path / "v.txt").open()))
    assert len(rows) == 6 and rows[0]["session"] == "s" and "answer:helpful" in rows[0]
    rc, out, _ = morm(rated, "session", "export", "s", "--out", tmp_path / "c.json",
                      "--objective", "harmless", capsys=capsys)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert rc == 0 and len(doc["examples"]) == 3 and doc["examples"][0]["score"] == 0
    rc, out, _ = morm(rated, "session", "export", "s", "--dataset", "votes", capsys=capsys)
    assert rc == 0 and "saved dataset 'votes': 6 preference pairs" in out
    rc, _, err = morm(rated, "session", "export", "s", "--dataset", "votes", capsys=capsys)
    assert rc == 2 and "votes" in err  # not replaced unasked
    assert morm(rated, "session", "export", "s", "--dataset", "votes", "--overwrite",
                capsys=capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "v.jsonl", "v.txt", "ws"]


def test_report_session(rated, tmp_path, capsys):
    rc, out, _ = morm(rated, "report", "session", "s", "--out", tmp_path / "s.html",
                      capsys=capsys)
    page = (tmp_path / "s.html").read_text()
    assert rc == 0 and page.startswith("<!DOCTYPE html>") and "Rating session s" in page


@pytest.mark.parametrize("args,field,msg", [
    (["session", "results", "nope"], "session", "no rating session named 'nope'"),
    (["session", "create", "bad name", "--candidates", "xy"], "name", "invalid session name"),
    (["session", "create", "s2"], "candidates", "--candidates SET or --comparison NAME"),
    (["session", "create", "s2", "--candidates", "xy"], "objectives", "pass --objectives"),
    (["session", "create", "s2", "--candidates", "xy", "--objectives", "helpful",
      "--limit-prompts", "-1"], "limit_prompts", ">= 0"),
    (["session", "create", "s2", "--comparison", "none"], "comparison", "no comparison"),
    (["session", "create", "s", "--candidates", "xy", "--objectives", "helpful"], "name",
     "exists"),
    (["session", "export", "s", "--out", "v.parquet"], "format", "cannot tell the format"),
    (["session", "export", "s"], "out", "--out FILE or --dataset NAME"),
    (["session", "export", "s", "--out", "v.csv", "--objective", "helpful"], "format",
     "LLM Comparator"),
    (["session", "export", "s", "--out", "v.json", "--objective", "funny"], "objective",
     "unknown objective"),
    (["session", "export", "s", "--out", "v.json", "--policies", "x,q"], "policies",
     "two of the session's policies"),
    (["report", "session", "s", "--out", "r.txt"], "out", "ending in .html"),
    (["report", "session", "nope"], "session", "no rating session"),
])
def test_bad_session_input_is_one_clear_message(rated, capsys, args, field, msg):
    rc, _, err = morm(rated, *args, capsys=capsys)
    assert rc == 2 and f"field '{field}'" in err and msg in err, err


def test_help_lists_the_commands():
    from morm_explorer.cli import build_parser

    text = build_parser().format_help()
    for cmd in ("compare run", "compare list", "compare show", "session create", "session list",
                "session results", "session export", "session close", "report comparison",
                "report session"):
        assert f"morm {cmd} " in text, cmd
