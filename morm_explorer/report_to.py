"""`report_to`: send a run's metrics to TensorBoard, Weights & Biases or MLflow as well.

Names and meaning follow transformers' ``TrainingArguments.report_to``: ``tensorboard``,
``wandb``, ``mlflow``, several at once, ``all`` for every one of them that is installed and
``none`` for none, which is the default here. The job store stays the record; `report_metrics`
wraps a run's metrics hook so that every call also goes to the chosen backends, with the same
step and names (``loss/total``, ``objective/scores/<objective>``, ...), and closes them when the
run ends, however it ends. The run's config is logged once (TensorBoard: text and hparams;
W&B: the run config; MLflow: params).

The packages are optional and imported only when a run opens them; `check_installed` refuses a
missing one early, with the pip package to install. W&B and MLflow read their usual environment
variables (``WANDB_PROJECT``, ``WANDB_MODE``, ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``, ...). This module imports neither torch nor any backend at load.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from morm_explorer.errors import MormError

# backend name -> the pip package it needs
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limit of params per log_params batch
MLFLOW_PARAM_CHARS = 500  # the longest param value every MLflow server version stores

MetricsFn = Callable[[int, dict], None]


def parse_report_to(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``report_to`` as given (a name, comma-separated names, or a list of them) -> the
    backend names, in order, without repeats; ``none`` -> (), ``all`` kept as ("all",)."""
    items = [value] if isinstance(value, str) else list(value or ())
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise MormError(f"report_to must be names, got {item!r}", field="report_to")
        names += [n.strip().lower() for n in item.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    allowed = (*PACKAGES, "all", "none")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise MormError(f"report_to must be among {', '.join(allowed)}, got {', '.join(bad)}",
                        field="report_to")
    if len(names) > 1 and ({"all", "none"} & set(names)):
        raise MormError(f"report_to 'all' or 'none' stands alone, got {', '.join(names)}",
                        field="report_to")
    return () if names == ["none"] else tuple(names)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_installed(report_to: Sequence[str]) -> tuple[str, ...]:
    """The backends a run reports to (``all``: each one installed); raises `MormError` naming
    the pip package of a chosen backend that is not installed."""
    if tuple(report_to) == ("all",):
        return tuple(name for name, pkg in PACKAGES.items() if _installed(pkg))
    for name in report_to:
        if not _installed(PACKAGES[name]):
            raise MormError(f"report_to {name} needs the {PACKAGES[name]} package: "
                            f"pip install {PACKAGES[name]}", field="report_to")
    return tuple(report_to)


def resolve_logging_dir(path: str) -> str:
    """An absolute ``logging_dir`` ("" stays ""): a job may run in another folder than the one
    it was submitted from."""
    if not isinstance(path, str):
        raise MormError(f"logging_dir must be a folder path, got {path!r}", field="logging_dir")
    return os.path.abspath(os.path.expanduser(path)) if path.strip() else ""


def _flat(config: dict) -> dict[str, Any]:
    """Config values as scalars or text (lists and dicts as JSON), for hparams and params."""
    return {k: v if isinstance(v, bool | int | float | str) else json.dumps(v)
            for k, v in config.items()}


class _TensorBoard:
    def __init__(self, logging_dir: Path, run_name: str, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(logging_dir), flush_secs=10)
        self.writer.add_text("config", f"```json\n{json.dumps(config, indent=2, default=str)}\n```")
        # The hparams plugin's summaries, written into this run itself (`add_hparams` would
        # open a second run in a subfolder).
        for summary in hparams(_flat(config), {}):
            self.writer.file_writer.add_summary(summary)

    def log(self, step: int, values: dict) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self, status: str) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, logging_dir: Path, run_name: str, config: dict) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "morm-explorer"),
                              name=run_name, config=config)

    def log(self, step: int, values: dict) -> None:
        self.run.log(dict(values), step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class _MLflow:
    def __init__(self, logging_dir: Path, run_name: str, config: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=run_name)
        params = [(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in _flat(config).items()]
        for i in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
            mlflow.log_params(dict(params[i:i + MLFLOW_PARAMS_PER_CALL]))

    def log(self, step: int, values: dict) -> None:
        self.mlflow.log_metrics(dict(values), step=step)

    def close(self, status: str) -> None:
        self.mlflow.end_run(status=status)


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


def _open(name: str, logging_dir: Path, run_name: str, config: dict):
    try:
        return BACKENDS[name](logging_dir, run_name, config)
    except ImportError as e:  # installed but broken, or gone since `check_installed`
        raise MormError(f"report_to {name} needs the {PACKAGES[name]} package: pip install "
                        f"{PACKAGES[name]} ({e})", field="report_to") from e


def _status(error: BaseException | None) -> str:
    """MLflow's name for how a run ended: FINISHED, KILLED (cancelled) or FAILED."""
    if error is None:
        return "FINISHED"
    from morm_explorer.jobs.context import JobCancelled

    return "KILLED" if isinstance(error, JobCancelled | KeyboardInterrupt) else "FAILED"


@contextmanager
def report_metrics(metrics: MetricsFn, config: Any, runs_dir: Path) -> Iterator[MetricsFn]:
    """``metrics`` wrapped so that each call also goes, with the same step and values, to the
    backends of ``config.report_to`` (a run named ``config.name``, its config
    ``config.to_dict()`` logged once). TensorBoard writes to ``config.logging_dir``, else to a
    new ``<runs_dir>/<date-time>`` folder per run. The backends are closed on leaving, however
    the run ended."""
    names = check_installed(config.report_to)
    logging_dir = Path(config.logging_dir or runs_dir / time.strftime("%Y%m%d-%H%M%S"))
    with ExitStack() as stack:  # closes every backend opened, even when one close fails
        opened = []
        for name in names:
            backend = _open(name, logging_dir, config.name, config.to_dict())
            stack.push(lambda _type, error, _tb, b=backend: b.close(_status(error)))
            opened.append(backend)

        def report(step: int, values: dict) -> None:
            metrics(step, values)  # the job store first: it refuses bad values
            for backend in opened:
                backend.log(step, values)

        yield report if opened else metrics
