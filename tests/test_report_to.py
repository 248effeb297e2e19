"""`report_to` (morm_explorer/report_to.py): the metrics a run sends to the job store also go to
TensorBoard (read back from its event files), W&B and MLflow (fake modules that record calls)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest

from morm_explorer.errors import MormError
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.report_to import check_installed, parse_report_to
from morm_explorer.reward.config import TrainConfig
from tests.test_reward import tiny_cfg, tiny_pairs

BACKENDS = ("tensorboard", "wandb", "mlflow")


def _fake_backends(monkeypatch) -> dict[str, list]:
    """Fake ``wandb`` and ``mlflow`` modules in sys.modules; returns their recorded calls:
    "wandb" and "mlflow" get (step, values) per logging call, "calls" everything else."""
    rec: dict[str, list] = {"wandb": [], "mlflow": [], "calls": []}

    def module(name: str, **functions) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec sees it
        for key, fn in functions.items():
            setattr(mod, key, fn)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    class Run:
        def log(self, values: dict, step: int) -> None:
            rec["wandb"].append((step, dict(values)))

        def finish(self, exit_code: int = 0) -> None:
            rec["calls"].append(("wandb.finish", exit_code))

    def init(**kw) -> Run:
        rec["calls"].append(("wandb.init", kw))
        return Run()

    module("wandb", init=init)
    module("mlflow",
           start_run=lambda run_name: rec["calls"].append(("mlflow.start_run", run_name)),
           log_params=lambda params: rec["calls"].append(("mlflow.log_params", params)),
           log_metrics=lambda metrics, step: rec["mlflow"].append((step, dict(metrics))),
           end_run=lambda status: rec["calls"].append(("mlflow.end_run", status)))
    return rec


def _flat(logged: list[tuple[int, dict]]) -> dict[tuple[int, str], float]:
    return {(step, key): v for step, values in logged for key, v in values.items()}


def _store_metrics(ws, job_id: str) -> dict[tuple[int, str], float]:
    from morm_explorer.jobs.store import JobStore

    long = JobStore(ws).metrics(job_id)
    return {(int(r.step), r.key): r.value for r in long.itertuples()}


def _tensorboard(folder: Path):
    """(scalars as {(step, tag): value}, the accumulator) of one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {(e.step, tag): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    return scalars, acc


def _tiny_data(tmp_path) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    return str(path)


# -- options -------------------------------------------------------------------------------


def test_report_to_follows_transformers_names():
    assert parse_report_to("tensorboard, WandB") == ("tensorboard", "wandb")
    assert parse_report_to(["mlflow", "tensorboard,mlflow"]) == ("mlflow", "tensorboard")
    assert parse_report_to("none") == parse_report_to(()) == parse_report_to(None) == ()
    assert parse_report_to("all") == ("all",)
    for bad in ("comet", "none,wandb", ["all", "mlflow"], [3]):
        with pytest.raises(MormError) as e:
            parse_report_to(bad)
        assert e.value.field == "report_to"
    cfg = TrainConfig(dataset="d", report_to="tensorboard", logging_dir="tb")
    assert cfg.report_to == ("tensorboard",) and Path(cfg.logging_dir) == Path.cwd() / "tb"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    ppo = PPOConfig(report_to=["wandb", "mlflow"])
    assert ppo.to_dict()["report_to"] == ["wandb", "mlflow"]
    assert PPOConfig.from_dict(json.loads(json.dumps(ppo.to_dict()))) == ppo


def test_all_means_each_installed_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # find_spec: not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert check_installed(("all",)) == ("tensorboard",)
    assert check_installed(()) == ()


def test_cli_flags_comma_separated_or_repeated(tmp_path, monkeypatch):
    from morm_explorer.cli import build_parser
    from morm_explorer.policy.cli import _config
    from morm_explorer.reward.cli import config_from_args

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["rm", "train", "--dataset", "d", "--report_to",
                                      "tensorboard", "--report-to", "wandb,mlflow",
                                      "--logging_dir", "tb", "--objectives", "helpful",
                                      "--objectives", "harmless"])
    cfg = config_from_args(args)
    assert cfg.report_to == BACKENDS and cfg.logging_dir == str(tmp_path / "tb")
    assert cfg.objectives == ("helpful", "harmless")
    assert config_from_args(build_parser().parse_args(["rm", "train", "--dataset", "d"])
                            ).report_to == ()
    ppo = _config(build_parser().parse_args(["ppo", "train", "--report_to", "none"]))
    assert ppo.report_to == () and ppo.logging_dir == ""
    ppo = _config(build_parser().parse_args(["ppo", "train", "--report_to", "all"]))
    assert ppo.report_to == ("all",)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_missing_package_is_named_before_any_work(name, ws, tmp_path, monkeypatch, capsys):
    from morm_explorer.cli import main
    from morm_explorer.policy.ppo_jobs import PPOJob
    from morm_explorer.reward.jobs import TrainRewardModelJob
    from morm_explorer.reward.train import Hooks, train_reward_model

    monkeypatch.setitem(sys.modules, name, None)
    message = f"pip install {name}"
    with pytest.raises(MormError, match=message):
        TrainRewardModelJob(config={"dataset": "d", "report_to": [name]})
    with pytest.raises(MormError, match=message):
        PPOJob(config={"report_to": [name]})
    started = []
    with pytest.raises(MormError, match=message):
        train_reward_model(TrainConfig(dataset="no-such-file.jsonl", report_to=name),
                           tmp_path / "rm", hooks=Hooks(progress=lambda f, m="": started.append(m)))
    assert started == []  # refused before loading anything
    assert main(["ppo", "train", "--reward_model", "rm", "--report_to", name, "--submit"]) == 2
    assert message in capsys.readouterr().err


def test_reporting_settings_neither_stop_a_resume_nor_mix_sweep_runs():
    from morm_explorer.policy.ppo_checkpoint import _changes
    from morm_explorer.policy.sweep import sweep_configs

    saved = {k: v for k, v in PPOConfig().to_dict().items()
             if k not in ("report_to", "logging_dir")}  # a checkpoint from before the options
    assert _changes(saved, PPOConfig(report_to="tensorboard", logging_dir="tb")) == []
    assert _changes(saved, PPOConfig(lr=1.0)) == ["lr"]
    runs = sweep_configs(PPOConfig(name="sw", logging_dir="/tmp/tb"), ["a", "b"], 1)
    assert [c.logging_dir for c in runs] == ["/tmp/tb/sw-0", "/tmp/tb/sw-1"]
    assert {c.logging_dir for c in sweep_configs(PPOConfig(), ["a", "b"], 1)} == {""}


# -- runs ----------------------------------------------------------------------------------


def test_reward_model_job_reports_the_store_metrics_everywhere(ws, tiny_bert, tmp_path,
                                                               monkeypatch):
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.reward.jobs import TrainRewardModelJob

    rec = _fake_backends(monkeypatch)
    monkeypatch.setenv("WANDB_PROJECT", "rm-project")
    cfg = tiny_cfg(_tiny_data(tmp_path), tiny_bert, epochs=3, name="rm-tb", device="cpu",
                   report_to=BACKENDS)
    info = run_inline(ws, TrainRewardModelJob(cfg.to_dict()))
    assert info.status == "succeeded", info.error

    stored = _store_metrics(ws, info.id)
    assert {k for _, k in stored} >= {"loss/total", "loss/helpful", "loss/harmless", "eval/loss"}
    assert len({s for s, _ in stored}) == 3  # one step per epoch
    runs = list((ws.root / "runs" / "reward_model" / "rm-tb" / "tb").iterdir())
    assert len(runs) == 1
    scalars, acc = _tensorboard(runs[0])
    assert scalars.keys() == stored.keys()
    assert scalars == pytest.approx(stored, rel=1e-6)  # TensorBoard keeps float32
    assert _flat(rec["wandb"]) == stored and _flat(rec["mlflow"]) == stored
    assert "config/text_summary" in acc.Tags()["tensors"]  # the config, once
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"name": "rm-tb"' in text
    assert set(acc.PluginTagToContent("hparams")) >= {"_hparams_/experiment",
                                                      "_hparams_/session_start_info"}

    calls = dict(rec["calls"][:1])
    assert calls["wandb.init"]["project"] == "rm-project"
    assert calls["wandb.init"]["name"] == "rm-tb"
    assert calls["wandb.init"]["config"]["dataset"] == cfg.dataset
    params = {k: v for c, p in rec["calls"] if c == "mlflow.log_params" for k, v in p.items()}
    assert params["name"] == "rm-tb" and params["report_to"] == json.dumps(list(BACKENDS))
    assert ("mlflow.start_run", "rm-tb") in rec["calls"]
    assert rec["calls"][-2:] == [("mlflow.end_run", "FINISHED"), ("wandb.finish", 0)]


@pytest.mark.parametrize("error, status", [("cancel", "KILLED"), ("crash", "FAILED")])
def test_backends_are_closed_when_a_run_fails(error, status, tiny_bert, tmp_path, monkeypatch):
    from morm_explorer.jobs.context import JobCancelled
    from morm_explorer.reward.train import Hooks, train_reward_model

    rec = _fake_backends(monkeypatch)
    seen: list[int] = []

    def check_cancelled() -> None:  # stop after the first epoch's metrics
        if seen:
            raise JobCancelled("cancelled") if error == "cancel" else RuntimeError("crash")

    cfg = tiny_cfg(_tiny_data(tmp_path), tiny_bert, epochs=3, report_to=BACKENDS,
                   logging_dir=str(tmp_path / "tb"))
    hooks = Hooks(metrics=lambda step, values: seen.append(step),
                  check_cancelled=check_cancelled)
    with pytest.raises(JobCancelled if error == "cancel" else RuntimeError):
        train_reward_model(cfg, tmp_path / "rm", hooks=hooks)
    assert [s for s, _ in rec["wandb"]] == [s for s, _ in rec["mlflow"]] == seen
    assert rec["calls"][-2:] == [("mlflow.end_run", status), ("wandb.finish", 1)]
    scalars, _ = _tensorboard(tmp_path / "tb")  # written out on closing
    assert {s for s, _ in scalars} == set(seen)


def test_ppo_job_reports_the_store_metrics_to_tensorboard(ws, tiny_rm, tmp_path, monkeypatch):
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.policy.ppo_jobs import PPOJob
    from tests.test_policy import _save_tiny

    rec = _fake_backends(monkeypatch)
    config = dict(name="p-tb", policy=_save_tiny(tmp_path / "policy"),
                  reward_model=str(tiny_rm), steps=2, batch_size=4, mini_batch_size=2,
                  max_new_tokens=4, device="cpu", sample_every=0,
                  report_to=["tensorboard", "wandb"])
    info = run_inline(ws, PPOJob(config=config))
    assert info.status == "succeeded", info.error

    stored = _store_metrics(ws, info.id)
    assert {s for s, _ in stored} == {0, 1} and (0, "objective/scores/harmless") in stored
    runs = list((ws.root / "runs" / "ppo" / "p-tb" / "tb").iterdir())
    assert len(runs) == 1
    scalars, _ = _tensorboard(runs[0])
    assert scalars.keys() == stored.keys()
    assert scalars == pytest.approx(stored, rel=1e-6)
    assert _flat(rec["wandb"]) == stored
    assert rec["calls"][0][1]["name"] == "p-tb" and rec["calls"][-1] == ("wandb.finish", 0)
