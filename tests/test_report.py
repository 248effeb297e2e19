"""The comparison report: one self-contained HTML file that parses, embeds plotly.js once,
holds one div per figure, escapes model outputs, and shows the date and the weights."""

from __future__ import annotations

from datetime import datetime, timezone
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from morm_explorer.evaluation.compare import Comparison
from morm_explorer.evaluation.report import comparison_figures, comparison_report

EVIL = "<script>alert('pwned')</script>"
WEIGHTS = {"helpful": 0.8, "harmless": 0.2}


def synthetic_comparison() -> Comparison:
    """Three policies, six prompts in two categories, two samples each, a judge; one response
    and one prompt carry a script tag."""
    rng = np.random.default_rng(0)
    rows = []
    for k, policy in enumerate(["base", "tuned", "tuned-harmless"]):
        for i in range(6):
            for j in range(2):
                rows.append({
                    "prompt_id": f"p{i}", "sample": j, "policy": policy,
                    "prompt": f"prompt {i} {EVIL}" if i == 0 else f"prompt {i}",
                    "category": "howto" if i < 3 else "risky",
                    "response": EVIL if (k, i, j) == (1, 0, 0) else f"answer {k}.{i}.{j}",
                    "n_tokens": 5 + 3 * k + j, "n_chars": 20 + 9 * k + j, "finish": "eos",
                    "rm:helpful": rng.normal(k * 0.5, 1), "rm:harmless": rng.normal(-k, 1),
                    "judge:helpful": rng.normal(0, 1), "judge:harmless": rng.normal(0, 1),
                    "kl": 0.0 if k == 0 else abs(rng.normal(k, 0.3))})
    manifest = {
        "format": "morm-comparison", "name": "synthetic", "created_at": 1_700_000_000.0,
        "policies": [
            {"label": "base", "ref": "smollm2", "kind": "base", "weights": None},
            {"label": "tuned", "ref": "tuned", "kind": "ppo", "base": "smollm2",
             "weights": WEIGHTS, "scalarizer": "weighted_sum", "reward_model": "rm"},
            {"label": "tuned-harmless", "ref": "tuned-harmless", "kind": "ppo",
             "base": "smollm2", "weights": {"helpful": 0.3, "harmless": 0.7},
             "scalarizer": "chebyshev", "reward_model": "rm"}],
        "baseline": "base", "base_policy": "smollm2",
        "reward_model": {"name": "rm", "objectives": ["helpful", "harmless"]},
        "judge_model": {"name": "judge-rm", "objectives": ["helpful", "harmless"]},
        "sampling": {"n": 2, "seed": 0}, "prompts": "demo", "n_prompts": 6,
        "candidate_set": "compare-synthetic"}
    return Comparison("synthetic", pd.DataFrame(rows), manifest)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.figure_divs = 0
        self.sources: list[str] = []  # src of <script> and <link> tags: none may load anything
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag in ("script", "link", "img") and ("src" in dict(attrs) or "href" in dict(attrs)):
            self.sources.append(tag)
        if tag == "div" and "plotly-graph-div" in (dict(attrs).get("class") or ""):
            self.figure_divs += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_report_is_self_contained_and_escaped(tmp_path):
    c = synthetic_comparison()
    figs = comparison_figures(c, n_boot=200)
    assert set(figs) == {"objective space", "mean scores", "win rates", "kl and length",
                         "slices"}
    now = datetime(2025, 3, 4, 5, 6, tzinfo=timezone.utc)
    out = comparison_report(c, tmp_path / "sub" / "report.html", n_boot=200, now=now,
                            examples=["p0", "p3"])
    text = out.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    library = [s for s in parser.scripts if "plotly.js v" in s[:200]]
    assert len(library) == 1  # the library, once, inline: no CDN, no server
    assert parser.sources == []
    assert parser.figure_divs == len(figs)
    # one script per figure calls Plotly.newPlot; none carries a model's output unescaped
    assert sum("Plotly.newPlot" in s for s in parser.scripts) == len(figs)
    assert not any("alert('pwned')" in s for s in parser.scripts)
    assert EVIL not in text and "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in text
    assert "2025-03-04 05:06 UTC" in text and "2023-11-14" in text  # report and run dates
    assert "helpful 0.80 · harmless 0.20" in text and "chebyshev" in text
    assert "judge-rm" in text and "answer 2.3.1" in text  # judge section, chosen example


def test_report_default_examples_and_one_category(tmp_path):
    c = synthetic_comparison()
    c.frame["category"] = "howto"
    c.manifest["judge_model"] = None
    c.frame = c.frame.drop(columns=["judge:helpful", "judge:harmless"])
    figs = comparison_figures(c, baseline="tuned", n_boot=100)
    assert "slices" not in figs  # one category: nothing to slice
    out = comparison_report(c, tmp_path / "r.html", baseline="tuned", n_examples=2,
                            n_boot=100)
    parser = _Collector()
    parser.feed(out.read_text(encoding="utf-8"))
    assert parser.figure_divs == len(figs) == 4
    assert out.read_text(encoding="utf-8").count("<div class='grid'") == 2
