"""The browser benchmark's smallest configuration runs end to end in Chromium and reports every
figure: a slider step on Explore, timed to the updated winners."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from tests.browser import skip_reason
from tests.conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_browser_benchmark_smallest_run(tmp_path):
    if reason := skip_reason():
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    spec = importlib.util.spec_from_file_location("bench_browser",
                                                  REPO / "benchmarks" / "browser.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "browser.json"
    rc = bench.main(["--sizes", "demo,200", "--repeats", "2", "--warmup", "1",
                     "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["sizes"]) == {"demo", "200"}
    for r in res["sizes"].values():
        for measure in bench.MEASURES:  # every step was seen to change the winners
            assert len(r[measure]["all_ms"]) == 2
            assert all(0 < t < 120_000 for t in r[measure]["all_ms"])
        assert r["metrics"]["median_ms"] <= r["done"]["median_ms"]
        assert r["table"]["median_ms"] <= r["done"]["median_ms"]
    verdicts = {c["metric"]: c["result"] for c in res["summary"]}
    assert verdicts["browser/demo/winners_ms"] in ("PASS", "FAIL")  # the demo set's target
    assert verdicts["browser/200/winners_ms"] == "info"
