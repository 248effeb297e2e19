"""The quick part of the demo workspace: the built-in data in two parts and the candidate set."""

from __future__ import annotations

from morm_explorer.data.loaders import Dataset
from morm_explorer.demo import DEMO_DATASET, DEMO_JUDGE_DATASET, demo_source, ensure_demo


def test_ensure_demo_builds_both_parts_then_nothing(ws):
    assert ensure_demo(ws) == [DEMO_DATASET, DEMO_JUDGE_DATASET, "demo-candidates"]
    infos = {d.name: d for d in ws.list_datasets()}
    assert infos[DEMO_DATASET].source == demo_source("rm")
    assert "judge part, prompts disjoint" in infos[DEMO_JUDGE_DATASET].source
    assert "--kind model" in infos[DEMO_DATASET].source
    n_rm, n_judge = infos[DEMO_DATASET].n_records, infos[DEMO_JUDGE_DATASET].n_records
    assert n_rm > n_judge > 0  # about two thirds and one third
    written = [r for r in ws.load_dataset(DEMO_DATASET).records
               if (r.get("meta") or {}).get("written_by")]
    assert written, "the model-written pairs are missing from the demo data"
    assert ensure_demo(ws) == []  # idempotent
    assert {d.name: d.created_at for d in ws.list_datasets()} == {
        n: i.created_at for n, i in infos.items()}


def test_the_judges_part_shares_no_prompt_with_the_reward_models(ws):
    ensure_demo(ws)
    rm, judge = (ws.load_dataset(n).records for n in (DEMO_DATASET, DEMO_JUDGE_DATASET))
    assert rm and judge and not {r["prompt"] for r in rm} & {r["prompt"] for r in judge}

    def written(records: list[dict]) -> set[str]:  # template stock replies recur across topics
        return {r[k] for r in records if (r.get("meta") or {}).get("written_by")
                for k in ("response_a", "response_b")}

    assert written(rm) and written(judge) and not written(rm) & written(judge)


def test_ensure_demo_rebuilds_only_a_demo_dataset_an_older_version_made(ws):
    ensure_demo(ws)
    old = ws.load_dataset(DEMO_DATASET)
    ws.save_dataset(DEMO_DATASET, Dataset(old.records[:5], old.kind, old.report,
                                          "built-in demo data (morm data synth --seed 0)"),
                    overwrite=True)
    assert ensure_demo(ws) == [DEMO_DATASET]
    assert len(ws.load_dataset(DEMO_DATASET)) == len(old)
