"""The Explore benchmark's smallest configuration runs end to end and reports every figure."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_explore_benchmark_smallest_run(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_explore",
                                                  REPO / "benchmarks" / "explore.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "explore.json"
    rc = bench.main(["--prompts", "60", "--per-prompt", "5", "--repeats", "2",
                     "--pareto-n", "500", "--pareto-repeats", "2", "--n", "6",
                     "--single-n", "3", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    for layout in ("contiguous", "shuffled"):
        for variant in ("weighted_sum", "weighted_sum + constraint", "chebyshev"):
            assert res["select"][layout][variant]["agrees_with_best_of_n"] is True
    assert res["pareto"]["same_as_moocore"] is True
    assert 0 < res["pareto"]["front"] <= 500
    assert res["scoring"]["max_abs_diff"] <= 1e-5
    assert res["scoring"]["cached_vs_full_diff"] <= 1e-5
    metrics = {c["metric"]: c["result"] for c in res["summary"]}
    assert metrics["select/contiguous/weighted_sum/move_ms"] in ("PASS", "FAIL")
    assert metrics["select/contiguous/chebyshev/move_ms"] == "info"
    assert metrics["select/shuffled/slider_step/step_ms"] in ("PASS", "FAIL")
    assert res["select"]["contiguous"]["slider_step"]["map"]["median_ms"] >= 0
    assert {"pareto/ratio_to_moocore", "scoring/batched_speedup",
            "scoring/cached_speedup"} <= set(metrics)
