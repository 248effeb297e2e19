"""`benchmarks/all.py`: its table from every benchmark's output, and a real run of one part."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO


def _module():
    spec = importlib.util.spec_from_file_location("bench_all", REPO / "benchmarks" / "all.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_rows_from_every_benchmark():
    res = {
        "explore": {"summary": [{"metric": "pareto/ratio_to_moocore", "value": 1.02, "unit": "x",
                                 "target": "<= 1.5x", "result": "PASS"}]},
        "ppo_tiny": {"summary": {"tokens_per_s_median": 1500.0, "step_s_median": 0.07,
                                 "rollout_share": 0.68}},
        "reward": {
            "demo": {"frozen": [
                {"helpful": {"label": 0.8, "truth": 0.9}, "_seconds": 3.0},
                {"helpful": {"label": 0.6, "truth": 0.7}, "_seconds": 3.0}]},
            "hh": {"frozen": {"objectives": {"harmless": {
                "accuracy": 0.6, "ci_low": 0.58, "ci_high": 0.62}}}},
            "timing": {"ratio_multi": 1.1, "ratio_separate": 2.9, "median": {"x": 1.0}}},
        "ppo_smollm2": {"failed": True},
    }
    rows = {m: (v, t, r) for m, v, t, r in _module().rows_from(res)}
    assert rows["explore/pareto/ratio_to_moocore"] == ("1.02 x", "<= 1.5x", "PASS")
    assert rows["ppo_tiny/tokens_per_s"][0] == "1500.0 tok/s"
    assert rows["ppo_tiny/rollout_share"][0] == "68 %"
    assert rows["reward/demo/helpful_accuracy"][0] == "0.700"  # the mean over seeds
    assert rows["reward/demo/helpful_truth_accuracy"][0] == "0.800"
    assert rows["reward/hh_harmless/5fold_accuracy"][0] == "0.600 [0.580, 0.620]"
    assert rows["reward/timing/ratio_separate"][0] == "2.9x"
    assert not any(m.startswith("ppo_smollm2") for m in rows)  # a failed part gives no rows


@pytest.mark.slow
def test_all_runs_the_tiny_ppo_part_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "table.md"
    rc = _module().main(["--skip", "explore,smollm2,reward,transfer", "--device", "cpu",
                         "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert "| ppo_tiny/tokens_per_s |" in text
    assert ("command: `python benchmarks/all.py --skip explore,smollm2,reward,transfer "
            "--device cpu`") in text
    assert "CPUs" in text.splitlines()[0]


def test_transfer_rows_hold_the_targets():
    transfer = {"hh_baselines": {"shorter wins": [0.554, 0.53, 0.57]},
                "runs": [{"kind": "model", "hh_harmless": [0.585, 0.56, 0.6],
                          "builtin_heldout": {"helpful": [0.95, 0.9, 0.98],
                                              "harmless": [0.86, 0.8, 0.9]}}],
                "features": {"model": {"helpful": {"best": 0.62}, "honest": {"best": 0.7}}}}
    rows = {m: (v, t, r) for m, v, t, r in _module().transfer_rows(transfer)}
    assert rows["transfer/model/hh_harmless_zero_shot"][2] == "PASS"
    assert rows["transfer/model/builtin_heldout/harmless"][2] == "FAIL"
    assert rows["transfer/model/best_one_feature/helpful"][2] == "PASS"
    assert rows["transfer/model/best_one_feature/honest"][2] == "FAIL"
