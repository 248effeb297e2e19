"""The sampling job: `SampleCandidatesJob`, kind "sample_candidates".

Samples ``n`` responses per prompt from a causal-LM policy (default SmolLM2-135M-Instruct) and
stores them as a candidate set: the input of the Explore page. Large sets run on a worker;
`sample_candidates` is the same work for a small set run in the calling process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from morm_explorer.checks import check_int
from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.policy.config import SamplingConfig
from morm_explorer.workspace import Workspace, sanitize_name

DEMO_PROMPTS = "demo"
DEMO_TRAIN_PROMPTS = "demo-train"
"""the demo prompts RL trains on: all but the first `DEMO_HELDOUT` (the demo's runs use these)"""
DEMO_HELDOUT_PROMPTS = "demo-heldout"
"""the first `DEMO_HELDOUT` demo prompts, which no demo run trains on (the demo compares on them)"""
DEMO_HELDOUT = 24  # 4 of each of the 6 categories: the prompts cycle through the categories
PROMPT_SOURCES = (DEMO_PROMPTS, DEMO_TRAIN_PROMPTS, DEMO_HELDOUT_PROMPTS)


@dataclass(frozen=True)
class SampleCandidatesJob(JobSpec):
    """Sample a candidate set from a policy."""

    kind: ClassVar[str] = "sample_candidates"

    name: str = ""
    """name of the candidate set to create"""
    policy: str = "smollm2"
    """Hugging Face causal LM name (org/name@revision for a revision) or folder (alias:
    smollm2, the default policy)"""
    trust_remote_code: bool = False
    """run the model's own code (its config's auto_map): only for code you trust"""
    prompts: str = DEMO_PROMPTS
    """'demo' (the built-in prompt set) or a JSONL/CSV/Parquet file with a prompt column"""
    limit: int = 0
    """use only the first this many prompts (0: all)"""
    sampling: dict = field(default_factory=dict)
    """SamplingConfig fields: n, temperature, top_p, max_new_tokens, seed, batch_size, system"""
    device: str = "auto"
    """auto, cpu or cuda"""
    overwrite: bool = False
    """replace a candidate set of the same name"""

    def __post_init__(self) -> None:
        sanitize_name(self.name)
        SamplingConfig.from_dict(self.sampling)  # raises MormError naming the bad field
        check_int("limit", self.limit, 0)
        if not isinstance(self.trust_remote_code, bool):
            raise MormError(f"trust_remote_code must be true or false, got "
                            f"{self.trust_remote_code!r}", field="trust_remote_code")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MormError(f"device must be auto, cpu or cuda, got {self.device!r}",
                            field="device")


def load_prompts(source: str, limit: int = 0) -> list[dict]:
    """The built-in demo prompts (``demo``: all 72; ``demo-train`` and ``demo-heldout``: the
    two parts that share no prompt) or those of a file, the first ``limit`` of them (0: all)."""
    if source in PROMPT_SOURCES:
        from morm_explorer.data.demo_candidates import demo_prompts

        prompts = [{k: p[k] for k in ("prompt_id", "prompt", "category")}
                   for p in demo_prompts()]
        if source == DEMO_TRAIN_PROMPTS:
            prompts = prompts[DEMO_HELDOUT:]
        elif source == DEMO_HELDOUT_PROMPTS:
            prompts = prompts[:DEMO_HELDOUT]
    else:
        from morm_explorer.data.candidates import read_prompts

        prompts = read_prompts(source)
    return prompts[:limit] if limit else prompts


def sample_candidates(ws: Workspace, spec: SampleCandidatesJob, device: str = "cpu",
                      progress: Callable[[int, int], None] | None = None,
                      check_cancelled: Callable[[], None] | None = None, log=print):
    """Sample the set ``spec`` describes and save it; returns its `CandidateSetInfo`."""
    from morm_explorer.data.candidates import (
        candidate_set_info,
        from_records,
        save_candidate_set,
    )
    from morm_explorer.models import canonical_name
    from morm_explorer.policy.generate import sample
    from morm_explorer.policy.load import load_policy

    if not spec.overwrite:
        try:
            candidate_set_info(ws, spec.name)
        except MormError:
            pass
        else:
            raise MormError(f"a candidate set named {spec.name!r} exists; choose another name "
                            "or allow overwriting", field="overwrite")
    config = SamplingConfig.from_dict(spec.sampling)
    prompts = load_prompts(spec.prompts, spec.limit)
    log(f"sampling {config.n} responses to each of {len(prompts)} prompts from {spec.policy} "
        f"on {device} (temperature {config.temperature}, top-p {config.top_p}, "
        f"seed {config.seed})")
    model, tokenizer = load_policy(spec.policy, workspace=ws, device=device,
                                   trust_remote_code=spec.trust_remote_code)
    outputs = sample(model, tokenizer, [p["prompt"] for p in prompts], config,
                     progress=progress, check_cancelled=check_cancelled)
    source = canonical_name(spec.policy).rstrip("/").split("/")[-1]
    records = []
    for p, samples in zip(prompts, outputs, strict=True):
        for i, s in enumerate(samples):
            records.append({**p, "response": s["response"], "source": source,
                            "meta": {"sample": i, "n_tokens": s["n_tokens"],
                                     "finish": s["finish"], **config.to_dict()}})
    origin = f"sampled from {spec.policy} ({len(prompts)} prompts x {config.n})"
    cset = from_records(records, origin)
    return save_candidate_set(ws, spec.name, cset, overwrite=spec.overwrite)


def run_sample_candidates(spec: SampleCandidatesJob, ctx: JobContext) -> dict:
    device = ctx.device if spec.device == "auto" else spec.device
    info = sample_candidates(ctx.store.ws, spec, device=device,
                             progress=lambda done, total: ctx.progress(
                                 done / max(total, 1), f"{done}/{total} sequences"),
                             check_cancelled=ctx.check_cancelled, log=ctx.log)
    ctx.log(f"saved candidate set {info.name!r}: {info.n_candidates} candidates, "
            f"{info.n_prompts} prompts")
    return {"name": info.name, "n_candidates": info.n_candidates, "n_prompts": info.n_prompts}


register_job(SampleCandidatesJob.kind, SampleCandidatesJob, run_sample_candidates)
