"""Rewarded soups (Rame et al. 2023): interpolate two fine-tuned policies from the same base,
theta(lam) = (1 - lam) theta_a + lam theta_b, over a grid of lam, and see where each mix lands on
the objectives: a cheap approximation of the Pareto front without retraining.

`interpolate` mixes two state dicts; `SoupJob` (kind "soup") samples every mix on the same
prompts with the same seed, scores them with a reward model, and stores all samples as one
candidate set whose ``source`` is the mix (``soup lam=0.25``), so Explore and Compare can show
them; the job's result holds each mix's mean score per objective and which mixes are on the
front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.policy.config import SamplingConfig
from morm_explorer.workspace import Workspace, sanitize_name


def interpolate(a: Mapping, b: Mapping, lam: float) -> dict:
    """(1 - lam) a + lam b for every floating-point tensor; other tensors (integer buffers) come
    from ``a``. The two must have the same keys and shapes (the same base model)."""
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))[:3]
        raise MormError(f"the two policies have different parameters (e.g. {missing}); a soup "
                        "needs two fine-tunes of the same base model", field="policy_b")
    out = {}
    for k, ta in a.items():
        tb = b[k]
        if ta.shape != tb.shape:
            raise MormError(f"parameter {k} has shape {tuple(ta.shape)} in one policy and "
                            f"{tuple(tb.shape)} in the other", field="policy_b")
        out[k] = ta.lerp(tb.to(ta.dtype), lam) if ta.is_floating_point() else ta
    return out


def soup_label(lam: float) -> str:
    return f"soup lam={lam:g}"


@dataclass(frozen=True)
class SoupJob(JobSpec):
    """Interpolate two policies over a grid of lam, sample and score every mix."""

    kind: ClassVar[str] = "soup"

    name: str = ""
    """name of the candidate set that collects every mix's samples"""
    policy_a: str = ""
    """first policy (a workspace policy name, a folder, or smollm2); lam=0 is this one"""
    policy_b: str = ""
    """second policy, fine-tuned from the same base; lam=1 is this one"""
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """mixing coefficients, each in [0, 1]"""
    reward_model: str = ""
    """reward model that scores the samples (workspace name or folder)"""
    prompts: str = "demo"
    """'demo' or a prompt file"""
    limit: int = 24
    """first this many prompts (0: all)"""
    sampling: dict = field(default_factory=lambda: {"n": 2, "max_new_tokens": 64})
    """SamplingConfig fields; every mix uses the same seed"""
    device: str = "auto"
    """auto, cpu or cuda"""
    overwrite: bool = False
    """replace a candidate set of the same name"""

    def __post_init__(self) -> None:
        sanitize_name(self.name)
        for f in ("policy_a", "policy_b", "reward_model"):
            if not getattr(self, f):
                raise MormError(f"{f} is required", field=f)
        if not self.lambdas or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                   or not math.isfinite(x) or not 0 <= x <= 1
                                   for x in self.lambdas):
            raise MormError(f"lambdas must be numbers in [0, 1], got {self.lambdas!r}",
                            field="lambdas")
        SamplingConfig.from_dict(self.sampling)
        if self.device not in ("auto", "cpu", "cuda"):
            raise MormError(f"device must be auto, cpu or cuda, got {self.device!r}",
                            field="device")


def run_soup(ws: Workspace, spec: SoupJob, device: str = "cpu",
             progress: Callable[[float, str], None] | None = None,
             check_cancelled: Callable[[], None] | None = None, log=print) -> dict:
    """Sample and score every mix; store the samples as one candidate set. Returns the per-mix
    mean scores and the mixes on the front."""
    import numpy as np

    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.pareto import nondominated
    from morm_explorer.policy.generate import sample
    from morm_explorer.policy.jobs import load_prompts
    from morm_explorer.policy.load import load_policy
    from morm_explorer.scoring import score_candidate_set

    config = SamplingConfig.from_dict(spec.sampling)
    prompts = load_prompts(spec.prompts, spec.limit)
    model, tokenizer = load_policy(spec.policy_a, workspace=ws, device=device)
    other, _ = load_policy(spec.policy_b, workspace=ws, device="cpu")
    state_a = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state_b = other.state_dict()
    del other
    lambdas = sorted(set(float(x) for x in spec.lambdas))
    records = []
    for i, lam in enumerate(lambdas):
        if check_cancelled is not None:
            check_cancelled()
        model.load_state_dict(interpolate(state_a, state_b, lam))
        log(f"{soup_label(lam)}: sampling {len(prompts)} prompts x {config.n}")
        outs = sample(model, tokenizer, [p["prompt"] for p in prompts], config,
                      check_cancelled=check_cancelled)
        for p, samples in zip(prompts, outs, strict=True):
            records += [{**p, "response": s["response"], "source": soup_label(lam),
                         "meta": {"lambda": lam, "sample": j, "n_tokens": s["n_tokens"]}}
                        for j, s in enumerate(samples)]
        if progress is not None:
            progress((i + 1) / (len(lambdas) + 1), f"{i + 1}/{len(lambdas)} mixes sampled")
    cset = from_records(records, f"soup of {spec.policy_a} and {spec.policy_b}")
    save_candidate_set(ws, spec.name, cset, overwrite=spec.overwrite)
    scores = score_candidate_set(ws, spec.reward_model, spec.name, device=device)
    labels = cset.frame["source"].to_numpy()
    means = np.stack([scores.values[labels == soup_label(lam)].mean(0) for lam in lambdas])
    front = nondominated(means)
    table = {f"{lam:g}": dict(zip(scores.objectives, m.round(4).tolist(), strict=True))
             for lam, m in zip(lambdas, means, strict=True)}
    for lam, row, on in zip(lambdas, table.values(), front, strict=True):
        log(f"{soup_label(lam)}: " + ", ".join(f"{o} {v:.3f}" for o, v in row.items())
            + (" (on the front)" if on else ""))
    return {"name": spec.name, "lambdas": lambdas, "mean_scores": table,
            "front": [f"{lam:g}" for lam, on in zip(lambdas, front, strict=True) if on]}


def run_soup_job(spec: SoupJob, ctx: JobContext) -> dict:
    device = ctx.device if spec.device == "auto" else spec.device
    return run_soup(ctx.store.ws, spec, device=device, progress=ctx.progress,
                    check_cancelled=ctx.check_cancelled, log=ctx.log)


register_job(SoupJob.kind, SoupJob, run_soup_job)
