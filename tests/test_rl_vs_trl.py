"""benchmarks/rl_vs_trl.py: the project's GRPO and TRL's GRPOTrainer on the tiny policy, one
short run of each."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_rl_vs_trl_smallest_run(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_rl_vs_trl",
                                                  REPO / "benchmarks" / "rl_vs_trl.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rl_vs_trl.json"
    assert bench.main(["--policy", "tiny", "--rounds", "1", "--steps", "2", "--batch-size", "2",
                       "--group-size", "2", "--mini-batch-size", "2", "--max-new-tokens", "6",
                       "--lr", "1e-3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["project_tokens_per_s"]) == len(res["trl_tokens_per_s"]) == 1
    assert res["project_median"] > 0 and res["trl_median"] > 0
    assert res["ratio"] == pytest.approx(res["project_median"] / res["trl_median"])
