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
4. two short RL runs, ``demo-helpful`` and ``demo-harmless`` (weights leaning each way), on the
   ``demo-train`` prompts; the algorithm and settings were chosen by measurement
   (`benchmarks/demo_policies.py`, docs/benchmarks.md): on the held-out prompts each run beats
   the other on the objective it leans on, under the reward model and under the judge. Each
   saves a LoRA adapter on q_proj and v_proj in float16 (about 1.8 MB), small enough to ship;
5. the comparison ``demo`` of the base policy and the two runs on the ``demo-heldout`` prompts
   (which no run trains on), judged by ``demo-judge``.

Built from scratch on a 2-core CPU the job takes half an hour or more (`PART_SECONDS`); when
the shipped demo (`morm_explorer.demo_bundle`, policies included) was made with the job's
settings, its parts are installed first, in seconds, and only what is still missing is built
(the demo candidates' scores, half a minute). The app is usable
meanwhile and the Overview lists what is ready and what is still being prepared, with the time
left. Sizes are fields, so tests run it on tiny models in seconds.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from morm_explorer.checks import check_int, check_number
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
    priority: ClassVar[int] = BACKGROUND_PRIORITY  # what a user launches runs first

    real_pairs: int = DEMO_REAL_PAIRS
    """HH-RLHF training pairs per subset fetched for the reward models (0: built-in data)"""
    backbone: str = "minilm"
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
    algorithm: str = "grpo"
    """RL algorithm of the demo's two runs (ppo, grpo or rloo)"""
    rl_steps: int = 12
    """steps of each demo RL run"""
    rl_batch: int = 4
    """prompts per RL step"""
    group_size: int = 4
    """responses per prompt (grpo, rloo)"""
    rl_lr: float = 3e-4
    """learning rate of the runs' LoRA adapters"""
    kl_coef: float = 0.02
    """beta of the KL to the base policy"""
    rl_new_tokens: int = 32
    """response length while training"""
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """layers the runs' LoRA adapters adapt (empty: every attention and MLP projection)"""
    adapter_dtype: str = "float16"
    """dtype of the saved adapters (float16: about 1.8 MB each with q_proj, v_proj at r16,
    small enough to ship)"""
    compare_prompts: int = 24
    """held-out prompts in the demo comparison (at most the 24 of demo-heldout)"""
    compare_samples: int = 4
    """samples per prompt and policy in the demo comparison"""
    use_bundle: bool = True
    """install the shipped demo's parts (`morm_explorer.demo_bundle`) when it was made with
    these settings, instead of building them"""
    device: str = "auto"
    """auto, cpu or cuda"""

    def runs_on_any_node(self) -> bool:
        return False  # it builds the whole demo into the app's workspace

    def __post_init__(self) -> None:
        limits = {"real_pairs": (0, 1_000_000), "max_length": (8, 8192),
                  "rm_epochs": (1, 1000), "samples": (1, 64), "max_new_tokens": (1, 4096),
                  "rl_steps": (1, 10_000), "rl_batch": (1, 4096), "group_size": (1, 64),
                  "rl_new_tokens": (1, 4096), "compare_prompts": (1, 100_000),
                  "compare_samples": (1, 64)}
        for name, (low, high) in limits.items():
            check_int(name, getattr(self, name), low, high)
        from morm_explorer.policy.ppo_config import ADAPTER_DTYPES, ALGORITHMS

        if self.algorithm not in ALGORITHMS:
            raise MormError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got "
                            f"{self.algorithm!r}", field="algorithm")
        modules = self.lora_target_modules
        if not isinstance(modules, (list, tuple)) or not all(
                isinstance(m, str) and m for m in modules):
            raise MormError(f"lora_target_modules must be a list of layer names, got "
                            f"{modules!r}", field="lora_target_modules")
        object.__setattr__(self, "lora_target_modules", tuple(modules))  # JSON gives a list
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise MormError(f"adapter_dtype must be one of {', '.join(ADAPTER_DTYPES)}, got "
                            f"{self.adapter_dtype!r}", field="adapter_dtype")
        check_number("rl_lr", self.rl_lr, low=0.0, high=1.0)
        check_number("kl_coef", self.kl_coef, low=0.0, high=100.0)
        if not isinstance(self.use_bundle, bool):
            raise MormError(f"use_bundle must be true or false, got {self.use_bundle!r}",
                            field="use_bundle")
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
    from morm_explorer.policy.jobs import (
        DEMO_HELDOUT_PROMPTS,
        SampleCandidatesJob,
        sample_candidates,
    )
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.policy.ppo_jobs import PPOJob, run_ppo
    from morm_explorer.scoring import score_candidate_set

    ws = ctx.store.ws
    device = ctx.device if spec.device == "auto" else spec.device
    steps = ["data", "judge", "reward model", "scores", "SmolLM2 samples", *POLICIES,
             "comparison"]
    built: list[str] = []
    timings: dict[str, float] = {}

    def part(i: int) -> _Part:
        return _Part(ctx, i, len(steps), steps[i])

    def timed(name: str):
        return _Timer(timings, name)

    if spec.use_bundle and not demo_complete(ws):
        with timed("shipped demo"):
            built += _install_shipped(spec, ws, part(0), ctx.log)
    if not all(_exists(ws, "reward_models", n) for n in (JUDGE, RM)):
        part(0).progress(0.0, "fetching HH-RLHF from the Hugging Face hub")
        with timed("data"):
            data = prepare_demo_data(ws, spec.real_pairs, log=ctx.log)
        built += _train_reward_models(spec, ws, device, data, part, timings)
    part(3).progress(0.0, "scoring the demo candidates")
    with timed("scores"):
        score_candidate_set(ws, RM, DEMO_CANDIDATE_SET, device=device)
    if SAMPLED not in {c.name for c in list_candidate_sets(ws)}:
        p = part(4)
        with timed(SAMPLED):
            sample_candidates(ws, SampleCandidatesJob(
                name=SAMPLED, policy=spec.policy,
                sampling={"n": spec.samples, "max_new_tokens": spec.max_new_tokens}),
                device=device, progress=lambda d, t: p.progress(d / max(t, 1), f"{d}/{t}"),
                check_cancelled=ctx.check_cancelled, log=ctx.log)
        built.append(SAMPLED)
    with timed("scores"):
        score_candidate_set(ws, RM, SAMPLED, device=device)
    objectives = _rm_objectives(ws)
    for j, (name, weights) in enumerate(POLICIES.items()):
        if not _policy_exists(ws, name):
            weights = {o: w for o, w in weights.items() if o in objectives}
            cfg = PPOConfig(**demo_run_settings(spec), name=name, policy=spec.policy,
                            reward_model=RM, weights=weights, device=device)
            with timed(name):
                run_ppo(PPOJob(config=cfg.to_dict()), part(5 + j))
            built.append(name)
    if COMPARISON not in {c["name"] for c in list_comparisons(ws)}:
        p = part(len(steps) - 1)
        with timed(COMPARISON):
            run_compare(ws, CompareJob(
                name=COMPARISON, policies=[spec.policy, *POLICIES], reward_model=RM,
                judge_model=JUDGE, prompts=DEMO_HELDOUT_PROMPTS, limit=spec.compare_prompts,
                sampling={"n": spec.compare_samples, "max_new_tokens": spec.max_new_tokens}),
                device=device, progress=p.progress, check_cancelled=ctx.check_cancelled,
                log=ctx.log)
        built.append(COMPARISON)
    ctx.log(f"demo ready; built {', '.join(built) or 'nothing (all there)'}")
    ctx.progress(1.0, f"demo ready: all {len(steps)} parts")  # not the last part's message
    return {"built": built, "timings_s": {k: round(v, 1) for k, v in timings.items()}}


class _Timer:
    """Adds the seconds spent inside the block to ``timings[name]``."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = (self.timings.get(self.name, 0.0)
                                   + time.perf_counter() - self.t0)


def _policy_exists(ws, name: str) -> bool:
    """A finished run's policy: merged or an adapter folder, both carry morm_ppo.json."""
    from morm_explorer.policy.ppo_jobs import MANIFEST

    return (ws.root / "policies" / name / MANIFEST).is_file()


def _install_shipped(spec: PrepareDemoJob, ws, part: _Part, log) -> list[str]:
    """Install the shipped demo's missing parts (`morm_explorer.demo_bundle`) when it was built
    with this spec and the workspace's demo reward models, if any, are the shipped ones (a
    policy trained against another reward model would not belong with them). Returns the
    artifact names installed; nothing when there is no usable bundle."""
    from morm_explorer.data.candidates import list_candidate_sets
    from morm_explorer.demo_bundle import Bundle, bundle_path, install_bundle
    from morm_explorer.evaluation.compare import list_comparisons
    from morm_explorer.policy.ppo_jobs import METRICS, run_dir

    path = bundle_path()
    if not path.is_file():
        return []
    try:
        bundle = Bundle(path)
    except MormError as e:
        log(f"not using the shipped demo: {e}")
        return []
    if not bundle.matches(spec):
        log("not using the shipped demo: it was made with other settings than this build's "
            "(write it again with `morm demo --write-bundle`)")
        return []
    for model in (RM, JUDGE):
        heads = ws.root / "reward_models" / model / "heads.safetensors"
        rel = f"reward_models/{model}/heads.safetensors"
        if heads.is_file() and heads.read_bytes() != bundle.read(rel):
            log(f"not using the shipped demo: this workspace has its own {model}")
            return []
    sets = {c.name for c in list_candidate_sets(ws)}
    comparisons = {c["name"] for c in list_comparisons(ws)}

    def present(p: str) -> bool:
        group, name = p.split("/", 1)
        if group == "reward_models":
            return _exists(ws, group, name)
        if group == "policies":
            return _policy_exists(ws, name)
        if group == "candidates":
            return name in sets
        if group == "runs":
            return (run_dir(ws, name.split("/")[-1]) / METRICS).is_file()
        if group == "scores":
            return all((ws.root / rel).is_file() for rel in bundle.parts[p])
        return name in comparisons

    part.progress(0.0, "installing the shipped demo")
    done = install_bundle(ws, bundle, present, progress=part.progress, log=log)
    return [p.split("/")[-1] for p in done if not p.startswith(("runs/", "scores/"))]


def demo_run_settings(spec: PrepareDemoJob) -> dict:
    """The PPOConfig fields of the demo's two RL runs (besides name, weights and device): the
    settings `benchmarks/demo_policies.py` measured, trained on the ``demo-train`` prompts."""
    from morm_explorer.policy.jobs import DEMO_TRAIN_PROMPTS

    grouped = spec.algorithm != "ppo"
    responses = spec.rl_batch * (spec.group_size if grouped else 1)
    return {"algorithm": spec.algorithm, "prompts": DEMO_TRAIN_PROMPTS, "steps": spec.rl_steps,
            "batch_size": spec.rl_batch, "group_size": spec.group_size, "ppo_epochs": 1,
            "mini_batch_size": responses if grouped else max(1, responses // 2),
            "multi_objective_aggregation": "normalize_then_sum", "lr": spec.rl_lr,
            "kl_coef": spec.kl_coef, "max_new_tokens": spec.rl_new_tokens,
            "checkpoint_every": max(1, spec.rl_steps // 3), "merge_lora": False,
            "lora_target_modules": spec.lora_target_modules, "adapter_dtype": spec.adapter_dtype}


def _train_reward_models(spec: PrepareDemoJob, ws, device: str, data: DemoData,
                         part: Callable[[int], _Part], timings: dict[str, float]) -> list[str]:
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
            with _Timer(timings, name):
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
        _policy_exists(ws, n) for n in POLICIES) and COMPARISON in {
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
            *((f"fine-tuned policy {n}", _policy_exists(ws, n)) for n in POLICIES),
            (f"comparison {COMPARISON}", COMPARISON in {c["name"] for c in list_comparisons(ws)})]


# Seconds each part took when the shipped bundle was made (`morm demo --write-bundle`, 2-core
# CPU), the estimate where no bundle says otherwise; keyed like `demo_parts`' labels' last word.
PART_SECONDS = {JUDGE: 60.0, RM: 90.0, SAMPLED: 420.0, "demo-helpful": 420.0,
                "demo-harmless": 420.0, COMPARISON: 600.0}


def part_seconds() -> dict[str, float]:
    """How long each part of the full demo takes to build here, as far as is known: the times
    the shipped bundle's build recorded, else `PART_SECONDS`."""
    from morm_explorer.demo_bundle import bundle_path

    path = bundle_path()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return dict(_part_seconds(str(path), stamp))  # the Overview asks every few seconds


@functools.lru_cache(maxsize=4)
def _part_seconds(path: str, stamp: int | None) -> tuple[tuple[str, float], ...]:
    from morm_explorer.demo_bundle import Bundle

    seconds = dict(PART_SECONDS)
    if stamp is not None:
        try:
            bundle = Bundle(path)
        except MormError:
            return tuple(seconds.items())
        recorded = bundle.manifest.get("timings_s", {})
        seconds.update({k: float(v) for k, v in recorded.items()
                        if k in seconds and isinstance(v, (int, float)) and v > 0})
        if bundle.matches(PrepareDemoJob()):  # what the app's build installs: seconds
            shipped = {part.split("/")[-1] for part in bundle.parts
                       if not part.startswith("runs/")}  # a run's curves are not its policy
            seconds.update({k: 1.0 for k in seconds if k in shipped})
    return tuple(seconds.items())


def demo_time_left(ws, busy: float = 1.0) -> tuple[float, list[tuple[str, bool, float]]]:
    """(seconds left, [(label, ready, seconds) per part]) of the full demo's build from scratch,
    each part's time scaled by ``busy`` (1: a quiet machine)."""
    seconds = part_seconds()
    rows = [(label, ready, seconds.get(label.split()[-1], 0.0) * busy)
            for label, ready in demo_parts(ws)]
    return sum(s for _, ready, s in rows if not ready), rows


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
