"""Weight sweeps: several short PPO runs over a grid of weight vectors, to trace the front that
training (not just best-of-N selection) reaches.

`SweepJob` (kind "ppo_sweep") takes a base `PPOConfig` and a grid over some objectives' weights
(`selection.simplex_grid`); run i is ``<name>-<i>`` with the grid's i-th weights. One after
another inside the sweep job (each run commits ``policies/<name>-<i>``), or, with
``parallel``, as separate PPO jobs on the backend (on a Ray cluster they run side by side) that
the sweep waits for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from morm_explorer.checks import check_int
from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_jobs import PPOJob, run_ppo
from morm_explorer.selection import simplex_grid
from morm_explorer.workspace import sanitize_name


def sweep_configs(base: PPOConfig, objectives: list[str], grid_steps: int) -> list[PPOConfig]:
    """One config per point of the weight grid over ``objectives`` (other weights from the base
    config are dropped: the sweep spans exactly these objectives)."""
    if len(objectives) < 2 or len(set(objectives)) != len(objectives):
        raise MormError(f"a sweep needs two or more distinct objectives, got {objectives}",
                        field="objectives")
    grid = simplex_grid(len(objectives), grid_steps)
    return [PPOConfig.from_dict({**base.to_dict(), "name": f"{base.name}-{i}",
                                 "weights": {o: round(float(w), 4) for o, w in
                                             zip(objectives, row, strict=True)},
                                 "weight_schedule": [],
                                 # each run its own TensorBoard folder inside a chosen one
                                 "logging_dir": os.path.join(base.logging_dir,
                                                             f"{base.name}-{i}")
                                 if base.logging_dir else ""})
            for i, row in enumerate(grid)]


@dataclass(frozen=True)
class SweepJob(JobSpec):
    """PPO runs over a grid of weight vectors."""

    kind: ClassVar[str] = "ppo_sweep"

    config: dict = field(default_factory=dict)
    """the base PPOConfig; its name prefixes the runs' names"""
    objectives: list[str] = field(default_factory=list)
    """the objectives whose weights the grid spans"""
    grid_steps: int = 2
    """grid resolution: weights in steps of 1/grid_steps (2 objectives, 2 steps: 3 runs)"""
    parallel: bool = False
    """submit the runs as separate jobs (side by side on Ray) instead of one after another"""

    def runs_on_any_node(self) -> bool:
        return not self.parallel  # a parallel sweep submits and waits for its runs' jobs

    def __post_init__(self) -> None:
        check_int("grid_steps", self.grid_steps, 1, 10)
        base = PPOConfig.from_dict(self.config)
        sanitize_name(base.name)
        sweep_configs(base, list(self.objectives), self.grid_steps)


class _RunContext:
    """A sweep's context as one run sees it: metrics on the run's own step axis offset into the
    sweep's, progress scaled into the run's share; everything else is the sweep's."""

    def __init__(self, ctx: JobContext, index: int, total: int, steps: int) -> None:
        self._ctx, self._index, self._total, self._steps = ctx, index, total, steps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def metrics(self, step: int, values: dict) -> None:
        self._ctx.metrics(self._index * self._steps + step,
                          {**values, "sweep/run": float(self._index)})

    def progress(self, fraction: float, message: str = "") -> None:
        self._ctx.progress((self._index + fraction) / self._total,
                           f"run {self._index + 1}/{self._total}: {message}")


def run_sweep(spec: SweepJob, ctx: JobContext) -> dict:
    configs = sweep_configs(PPOConfig.from_dict(spec.config), list(spec.objectives),
                            spec.grid_steps)
    ctx.log(f"sweep of {len(configs)} PPO runs over {spec.objectives}: "
            + "; ".join(f"{c.name} {c.weights}" for c in configs))
    if spec.parallel:
        from morm_explorer.jobs.backend import LocalBackend, get_backend

        backend = get_backend(ctx.store.ws)
        if not isinstance(backend, LocalBackend):
            return _run_parallel(configs, backend, ctx)
        # the local worker runs one job at a time and is busy with this one: waiting for
        # child jobs there would never end, so the runs go one after another instead
        ctx.log("parallel sweeps need a Ray cluster (RAY_ADDRESS); running the runs in turn")
    runs = []
    for i, cfg in enumerate(configs):
        ctx.check_cancelled()
        out = run_ppo(PPOJob(config=cfg.to_dict()), _RunContext(ctx, i, len(configs),
                                                                cfg.steps))
        runs.append({"name": cfg.name, "weights": cfg.weights, **out})
    return {"runs": runs}


def _run_parallel(configs: list[PPOConfig], backend, ctx: JobContext) -> dict:
    ids = [backend.submit(PPOJob(config=c.to_dict())) for c in configs]
    ctx.log("submitted " + ", ".join(ids))
    try:
        while True:
            infos = [backend.get(i) for i in ids]
            done = sum(j.done for j in infos)
            ctx.progress(sum(j.progress for j in infos) / len(infos),
                         f"{done}/{len(infos)} runs done")  # raises once cancelled
            if done == len(infos):
                break
            time.sleep(2.0)
    except BaseException:
        for i in ids:
            backend.cancel(i)
        raise
    return {"runs": [{"name": c.name, "weights": c.weights, "job": j.id, "status": j.status,
                      **(j.result or {})} for c, j in zip(configs, infos, strict=True)]}


register_job(SweepJob.kind, SweepJob, run_sweep)
