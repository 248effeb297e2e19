"""The full demo, built in the background on first start: `PrepareDemoJob`, kind "prepare_demo".

`ensure_demo` makes the quick part (the built-in preference data and the demo candidate set)
before the first page shows. This job makes the rest, one step after another, each skipped when
its result is already there (so a job that died is simply submitted again):

0. the reward models' training data (`demo_data`): a sample of real HH-RLHF (helpful-base and
   harmless-base) when the Hugging Face hub answers, else the built-in data; either way in two
   parts that share no prompt, one for the reward model and one for the judge;
1. a held-out judge ``demo-judge`` (other pooling and seed, trained on the judge's part), then
   the demo reward model ``demo-rm`` (frozen MiniLM, one head per objective), each about 30 s
   on a CPU; the reward model comes last so that, as the newest model, it is what the pages
   pick by default;
2. scores of ``demo-candidates`` under ``demo-rm``;
3. ``smollm2-demo``: SmolLM2 sampled on the demo prompts, scored;
4. two short PPO runs, ``demo-helpful`` and ``demo-harmless`` (weights leaning each way);
5. the comparison ``demo`` of the base policy and the two runs, judged by ``demo-judge``.

On a 2-core CPU the whole job takes about half an hour (29 min measured from a fresh clone); the
app is usable meanwhile and the Overview lists what is ready and what is still being prepared.
Sizes are fields, so tests run it on tiny models in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from morm_explorer.checks import check_int
from morm_explorer.demo_data import (
    DEMO_REAL_DATASET,
    DEMO_REAL_PAIRS,
    DemoData,
    prepare_demo_data,
    read_demo_data,
)
from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import BACKGROUND_PRIORITY, JobSpec, register_job

RM, JUDGE, SAMPLED, COMPARISON = "demo-rm", "demo-judge", "smollm2-demo", "demo"
POLICIES = {"demo-helpful": {"helpful": 0.8, "harmless": 0.1, "honest": 0.1},
            "demo-harmless": {"helpful": 0.1, "harmless": 0.8, "honest": 0.1}}


@dataclass(frozen=True)
class PrepareDemoJob(JobSpec):
    """Build the demo's models, samples, policies and comparison (what is missing)."""

    kind: ClassVar[str] = "prepare_demo"

    real_pairs: int = DEMO_REAL_PAIRS
    """HH-RLHF training pairs per subset fetched for the reward models (0: built-in data)"""
    backbone: str = "minilm"
    priority: ClassVar[int] = BACKGROUND_PRIORITY  # what a user launches runs first
    """reward-model backbone"""
    max_length: int = 256
    """tokens per (prompt, response) pair the reward models read"""
    rm_epochs: int = 30
    """most epochs of reward-model training (early stopping may end sooner)"""
    policy: str = "smollm2"
    """base policy"""
    samples: int = 4
    """samples per demo prompt for smollm2-demo"""
    max_new_tokens: int = 64
    """response length for sampling and comparing"""
    ppo_steps: int = 8
    """steps of each demo PPO run"""
    ppo_batch: int = 8
    """prompts per PPO step"""
    compare_prompts: int = 24
    """prompts in the demo comparison"""
    device: str = "auto"
    """auto, cpu or cuda"""

    def __post_init__(self) -> None:
        limits = {"real_pairs": (0, 1_000_000), "max_length": (8, 8192),
                  "rm_epochs": (1, 1000), "samples": (1, 64), "max_new_tokens": (1, 4096),
                  "ppo_steps": (1, 10_000), "ppo_batch": (1, 4096),
                  "compare_prompts": (1, 100_000)}
        for name, (low, high) in limits.items():
            check_int(name, getattr(self, name), low, high)
        if self.device not in ("auto", "cpu", "cuda"):
            raise MormError(f"device must be auto, cpu or cuda, got {self.device!r}",
                            field="device")


class _Part:
    """The job's context as one step sees it: progress scaled into the step's share."""

    def __init__(self, ctx: JobContext, index: int, total: int, name: str) -> None:
        self._ctx, self._index, self._total, self._name = ctx, index, total, name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def progress(self, fraction: float, message: str = "") -> None:
        self._ctx.progress((self._index + fraction) / self._total,
                           f"{self._index + 1}/{self._total} {self._name}: {message}")

    def metrics(self, step: int, values: dict) -> None:  # the steps' own curves stay theirs
        pass


def _exists(ws, group: str, name: str) -> bool:
    return (ws.root / group / name / "config.json").is_file()


def run_prepare_demo(spec: PrepareDemoJob, ctx: JobContext) -> dict:
    from morm_explorer.data.candidates import list_candidate_sets
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
    from morm_explorer.evaluation.compare import CompareJob, list_comparisons, run_compare
    from morm_explorer.policy.jobs import SampleCandidatesJob, sample_candidates
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.policy.ppo_jobs import PPOJob, run_ppo
    from morm_explorer.scoring import score_candidate_set

    ws = ctx.store.ws
    device = ctx.device if spec.device == "auto" else spec.device
    steps = ["data", "judge", "reward model", "scores", "SmolLM2 samples", *POLICIES,
             "comparison"]
    built = []

    def part(i: int) -> _Part:
        return _Part(ctx, i, len(steps), steps[i])

    if not all(_exists(ws, "reward_models", n) for n in (JUDGE, RM)):
        part(0).progress(0.0, "fetching HH-RLHF from the Hugging Face hub")
        data = prepare_demo_data(ws, spec.real_pairs, log=ctx.log)
        built += _train_reward_models(spec, ws, device, data, part)
    part(3).progress(0.0, "scoring the demo candidates")
    score_candidate_set(ws, RM, DEMO_CANDIDATE_SET, device=device)
    if SAMPLED not in {c.name for c in list_candidate_sets(ws)}:
        p = part(4)
        sample_candidates(ws, SampleCandidatesJob(
            name=SAMPLED, policy=spec.policy, sampling={"n": spec.samples,
                                                        "max_new_tokens": spec.max_new_tokens}),
            device=device, progress=lambda d, t: p.progress(d / max(t, 1), f"{d}/{t}"),
            check_cancelled=ctx.check_cancelled, log=ctx.log)
        built.append(SAMPLED)
    score_candidate_set(ws, RM, SAMPLED, device=device)
    objectives = _rm_objectives(ws)
    for j, (name, weights) in enumerate(POLICIES.items()):
        if not _exists(ws, "policies", name):
            weights = {o: w for o, w in weights.items() if o in objectives}
            cfg = PPOConfig(name=name, policy=spec.policy, reward_model=RM, weights=weights,
                            steps=spec.ppo_steps, batch_size=spec.ppo_batch,
                            mini_batch_size=max(1, spec.ppo_batch // 2), lr=2e-4,
                            max_new_tokens=min(spec.max_new_tokens, 32), device=device)
            run_ppo(PPOJob(config=cfg.to_dict()), part(5 + j))
            built.append(name)
    if COMPARISON not in {c["name"] for c in list_comparisons(ws)}:
        p = part(len(steps) - 1)
        run_compare(ws, CompareJob(
            name=COMPARISON, policies=[spec.policy, *POLICIES], reward_model=RM,
            judge_model=JUDGE, limit=spec.compare_prompts,
            sampling={"n": 2, "max_new_tokens": spec.max_new_tokens}),
            device=device, progress=p.progress, check_cancelled=ctx.check_cancelled,
            log=ctx.log)
        built.append(COMPARISON)
    ctx.log(f"demo ready; built {', '.join(built) or 'nothing (all there)'}")
    return {"built": built}


def _train_reward_models(spec: PrepareDemoJob, ws, device: str, data: DemoData,
                         part: Callable[[int], _Part]) -> list[str]:
    """Train the judge, then the reward model, where missing, each on its own part of `data`
    (no prompt shared, so the judge is held out); returns those trained."""
    from morm_explorer.reward.config import TrainConfig
    from morm_explorer.reward.jobs import TrainRewardModelJob, run_train_reward_model

    built = []
    for i, (name, dataset, extra) in enumerate((
            (JUDGE, data.judge_dataset, {"pooling": "mean_response", "seed": 1}),
            (RM, data.dataset, {})), start=1):
        if not _exists(ws, "reward_models", name):
            cfg = TrainConfig(dataset=dataset, name=name, backbone=spec.backbone,
                              max_length=spec.max_length, epochs=spec.rm_epochs,
                              device=device, **extra)
            run_train_reward_model(TrainRewardModelJob(config=cfg.to_dict()), part(i))
            built.append(name)
    return built


def _rm_objectives(ws) -> list[str]:
    """The demo reward model's objectives: the policies' weights keep only those (real HH-RLHF
    has helpful and harmless, the built-in data honest too)."""
    from morm_explorer.reward.config import read_config

    return list(read_config(ws.root / "reward_models" / RM)["model"]["objectives"])


def demo_complete(ws) -> bool:
    """Whether every part of the full demo is in the workspace."""
    from morm_explorer.evaluation.compare import list_comparisons

    return all(_exists(ws, "reward_models", n) for n in (RM, JUDGE)) and all(
        _exists(ws, "policies", n) for n in POLICIES) and COMPARISON in {
        c["name"] for c in list_comparisons(ws)}


register_job(PrepareDemoJob.kind, PrepareDemoJob, run_prepare_demo)


def demo_parts(ws) -> list[tuple[str, bool]]:
    """Each part of the full demo, in build order, with whether it is in the workspace."""
    from morm_explorer.data.candidates import list_candidate_sets
    from morm_explorer.evaluation.compare import list_comparisons

    sets = {c.name for c in list_candidate_sets(ws)}
    return [(f"held-out judge {JUDGE}", _exists(ws, "reward_models", JUDGE)),
            (f"reward model {RM}", _exists(ws, "reward_models", RM)),
            (f"SmolLM2 samples {SAMPLED}", SAMPLED in sets),
            *((f"fine-tuned policy {n}", _exists(ws, "policies", n)) for n in POLICIES),
            (f"comparison {COMPARISON}", COMPARISON in {c["name"] for c in list_comparisons(ws)})]


def demo_data_line(ws) -> str | None:
    """One sentence on the data the demo reward model was (or is being) trained on, with where
    it came from; None before the demo build has chosen its data."""
    from morm_explorer.reward.config import read_config

    note = read_demo_data(ws)
    try:
        config = read_config(ws.root / "reward_models" / RM)
    except MormError:
        if note is None:
            return None
        return f"The demo reward model {RM} is being trained on {note.describe()}."
    dataset = config.get("training", {}).get("dataset", "?")
    infos = {d.name: d.source for d in ws.list_datasets()}
    source = infos.get(dataset) or config.get("data", {}).get("source", "")
    n_train = config.get("metrics", {}).get("n_train")
    size = f" ({n_train:,} training pairs after the held-out split)" if n_train else ""
    if dataset == DEMO_REAL_DATASET:
        return f"The demo reward model {RM} was trained on real data{size}: {source}."
    why = (f", because {note.reason}" if note is not None and not note.real and note.reason
           else "")
    return (f"The demo reward model {RM} was trained on the built-in demo data "
            f"({dataset}){size}{why}.")
