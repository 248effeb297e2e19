"""Comparing two to four policies on the same prompts: the compare job and its saved result.

`CompareJob` (kind "compare") samples every policy on the same prompts with the same
`SamplingConfig` (so the same per-batch seeds: `sample` derives them from the seed and the batch,
and every policy's batches hold the same prompts), stores all samples as ONE candidate set
``compare-<name>`` (``source`` = the policy's label), scores it with the training reward model
and an optional held-out judge reward model, and measures each sample's KL from the base policy
(teacher-forced log-probabilities: `morm_explorer.policy.likelihood`).
It writes ``<workspace>/comparisons/<name>/comparison.json``: the policies with the weights and
config they were trained with (from their ``morm_ppo.json``), the models, the sampling config,
the candidate set (name and fingerprint), the per-sample scores, KL and distance to each
model's training texts (`reward.trust`) aligned to the set's rows.

`load_comparison` reads it back, with no model, as a tidy frame: one row per
(prompt_id, sample, policy). Statistics on that frame are `morm_explorer.evaluation.stats`.
torch is imported only inside the functions that run models, so pages can load comparisons.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from morm_explorer.checks import check_int
from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.models import SMOLLM2, canonical_name
from morm_explorer.policy.config import SamplingConfig
from morm_explorer.reward.trust import SetTrust, assess_set
from morm_explorer.workspace import MAX_NAME_LEN, Workspace, atomic_write_text, sanitize_name

if TYPE_CHECKING:
    from morm_explorer.data.candidates import CandidateSet

log = logging.getLogger(__name__)

COMPARISONS = "comparisons"  # <workspace>/comparisons/<name>/comparison.json
MANIFEST = "comparison.json"
FORMAT = "morm-comparison"
SET_PREFIX = "compare-"
PPO_MANIFEST = "morm_ppo.json"  # morm_explorer.policy.ppo_checkpoint.MANIFEST (no torch here)


def candidate_set_name(name: str) -> str:
    """The candidate set that holds comparison ``name``'s samples (it belongs to it)."""
    return SET_PREFIX + name


@dataclass(frozen=True)
class CompareJob(JobSpec):
    """Sample 2-4 policies on the same prompts and seeds; score, measure KL, save."""

    kind: ClassVar[str] = "compare"

    name: str = ""
    """name of the comparison (also of its candidate set, compare-<name>)"""
    policies: list[str] = field(default_factory=list)
    """2-4 policies (smollm2, workspace policy names, folders, hub names as org/name or
    org/name@revision); the first is the baseline"""
    prompts: str = "demo"
    """'demo' or a prompt file"""
    limit: int = 0
    """first this many prompts (0: all)"""
    sampling: dict = field(default_factory=lambda: {"n": 2, "max_new_tokens": 64})
    """SamplingConfig fields; every policy uses the same seed"""
    reward_model: str = ""
    """the training reward model (workspace name or folder)"""
    judge_model: str = ""
    """optional held-out judge reward model the policies were not optimized against"""
    base_policy: str = ""
    """policy the KL is measured from (default: the base in the policies' morm_ppo.json, else
    the first policy)"""
    device: str = "auto"
    """auto, cpu or cuda"""
    overwrite: bool = False
    """replace a comparison of the same name"""
    trust_remote_code: bool = False
    """run the policies' own code (a config's auto_map): only for code you trust"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", sanitize_name(self.name))
        if len(candidate_set_name(self.name)) > MAX_NAME_LEN:
            raise MormError(f"name must be at most {MAX_NAME_LEN - len(SET_PREFIX)} characters",
                            field="name")
        p = self.policies
        if not isinstance(p, (list, tuple)) or not all(isinstance(x, str) and x.strip()
                                                       for x in p):
            raise MormError(f"policies must be a list of policy names, got {p!r}",
                            field="policies")
        if not 2 <= len(p) <= 4:
            raise MormError(f"compare 2 to 4 policies, got {len(p)}", field="policies")
        if len(set(p)) != len(p):
            raise MormError(f"a policy is listed twice: {list(p)}", field="policies")
        if not self.reward_model:
            raise MormError("reward_model is required", field="reward_model")
        check_int("limit", self.limit, 0)
        SamplingConfig.from_dict(self.sampling)
        if self.device not in ("auto", "cpu", "cuda"):
            raise MormError(f"device must be auto, cpu or cuda, got {self.device!r}",
                            field="device")
        if not isinstance(self.trust_remote_code, bool):
            raise MormError("trust_remote_code must be true or false",
                            field="trust_remote_code")


def policy_labels(refs: list[str]) -> list[str]:
    """Short unique labels: ``smollm2`` for the default policy, a folder's name for a path, a
    workspace name as it is; a repeated label gets ``-2``, ``-3``."""
    labels: list[str] = []
    for ref in refs:
        ref = ref.strip().rstrip("/")
        label = "smollm2" if canonical_name(ref) == SMOLLM2 else Path(ref).name or ref
        unique, k = label, 2
        while unique in labels:
            unique, k = f"{label}-{k}", k + 1
        labels.append(unique)
    return labels


def policy_provenance(ws: Workspace, ref: str) -> dict[str, Any]:
    """What a policy was trained with, from its ``morm_ppo.json``: kind ("ppo" or "base"),
    base policy, final weights, weight schedule, scalarizer, reward model and the run config.
    A policy without one (the base model, a hub model) has kind "base" and no weights."""
    saved = ws.root / "policies" / ref
    folder = saved if "/" not in ref and (saved / "config.json").is_file() else Path(ref)
    path = folder.expanduser() / PPO_MANIFEST
    out: dict[str, Any] = {"ref": ref, "kind": "base", "base": None, "weights": None,
                           "weight_schedule": None, "scalarizer": None, "reward_model": None,
                           "config": None}
    if not path.is_file():
        return out
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MormError(f"not valid JSON: {e}", file=str(path)) from e
    cfg = manifest.get("config") or {}
    weights = manifest.get("weights") or {}
    return {**out, "kind": "ppo", "base": cfg.get("policy"),
            "weights": weights.get("final") or cfg.get("weights") or None,
            "weight_schedule": cfg.get("weight_schedule") or None,
            "scalarizer": cfg.get("scalarizer"),
            "reward_model": manifest.get("reward_model") or cfg.get("reward_model"),
            "config": cfg}


def _sample_policy(ws: Workspace, ref: str, label: str, prompts: list[dict],
                   config: SamplingConfig, device: str,
                   check_cancelled: Callable[[], None] | None, trust: bool = False):
    """(candidate records, their log p under the policy, its tokenizer) for one policy."""
    from morm_explorer.policy.generate import sample
    from morm_explorer.policy.load import load_policy

    model, tokenizer = load_policy(ref, workspace=ws, device=device, trust_remote_code=trust)
    outs = sample(model, tokenizer, [p["prompt"] for p in prompts], config,
                  check_cancelled=check_cancelled)
    records = [{**p, "response": s["response"], "source": label,
                "meta": {"sample": j, "n_tokens": s["n_tokens"], "finish": s["finish"],
                         "policy": label}}
               for p, samples in zip(prompts, outs, strict=True) for j, s in enumerate(samples)]
    logp = _logprobs(model, tokenizer, records, config)
    return records, logp, tokenizer


def _logprobs(model, tokenizer, records: list[dict], config: SamplingConfig) -> np.ndarray:
    from morm_explorer.policy.likelihood import sequence_logprobs

    return sequence_logprobs(model, tokenizer, [r["prompt"] for r in records],
                             [r["response"] for r in records],
                             [r["meta"]["finish"] == "eos" for r in records],
                             batch_size=config.batch_size, system=config.system)


def _sample_all(ws: Workspace, spec: CompareJob, labels: list[str], prompts: list[dict],
                base_ref: str, device: str, progress, check_cancelled, log
                ) -> tuple[list[dict], list[float]]:
    """Every policy's candidate records, in policy order, and each sample's KL from the base:
    log pi(y|x) - log pi_base(y|x), the sum of the per-token k1 estimates (`kl_per_token`)."""
    from morm_explorer.policy.load import load_policy

    config = SamplingConfig.from_dict(spec.sampling)
    base, base_tok = load_policy(base_ref, workspace=ws, device=device,
                                 trust_remote_code=spec.trust_remote_code)
    records: list[dict] = []
    kl: list[float] = []
    for i, (ref, label) in enumerate(zip(spec.policies, labels, strict=True)):
        if check_cancelled is not None:
            check_cancelled()
        rows, logp, tok = _sample_policy(ws, ref, label, prompts, config, device,
                                         check_cancelled, spec.trust_remote_code)
        if tok.get_vocab() != base_tok.get_vocab():
            raise MormError(f"{label} and the base policy {base_ref} have different "
                            "tokenizers; KL needs policies fine-tuned from that base",
                            field="base_policy")
        kl += (logp - _logprobs(base, tok, rows, config)).tolist()
        records += rows
        log(f"{label}: mean KL from the base {np.mean(kl[-len(rows):]):.3f}")
        if progress is not None:
            progress((i + 1) / (len(labels) + 1), f"{i + 1}/{len(labels)} policies sampled")
    return records, kl


def run_compare(ws: Workspace, spec: CompareJob, device: str = "cpu",
                progress: Callable[[float, str], None] | None = None,
                check_cancelled: Callable[[], None] | None = None, log=print) -> dict:
    """Sample, score and measure every policy; save the candidate set and comparison.json.
    Returns each policy's mean score per objective and mean KL."""
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.policy.jobs import load_prompts
    from morm_explorer.scoring import score_candidate_set

    folder = ws.artifact_dir(COMPARISONS, spec.name)
    if (folder / MANIFEST).is_file() and not spec.overwrite:
        raise MormError(f"a comparison named {spec.name!r} exists; choose another name or "
                        "overwrite it", field="name")
    config = SamplingConfig.from_dict(spec.sampling)
    prompts = load_prompts(spec.prompts, spec.limit)
    if not prompts:
        raise MormError("no prompts to sample", field="prompts")
    labels = policy_labels(list(spec.policies))
    provenance = [policy_provenance(ws, p) for p in spec.policies]
    base_ref = spec.base_policy or next((p["base"] for p in provenance if p["base"]),
                                        spec.policies[0])
    log(f"KL is measured from {base_ref}; {len(prompts)} prompts x {config.n} samples")
    records, kl = _sample_all(ws, spec, labels, prompts, base_ref, device, progress,
                              check_cancelled, log)
    cset = from_records(records, f"comparison {spec.name}")
    # The set belongs to the comparison: one left by a failed run of the same name is replaced.
    save_candidate_set(ws, candidate_set_name(spec.name), cset, overwrite=True)
    rm = score_candidate_set(ws, spec.reward_model, cset, device=device)
    judge = (score_candidate_set(ws, spec.judge_model, cset, device=device)
             if spec.judge_model else None)
    manifest = {
        "format": FORMAT, "name": spec.name, "created_at": time.time(), "spec": spec.to_dict(),
        "policies": [{"label": lab, **prov} for lab, prov in zip(labels, provenance,
                                                                  strict=True)],
        "baseline": labels[0], "base_policy": base_ref,
        "reward_model": {"name": spec.reward_model, "objectives": rm.objectives},
        "judge_model": ({"name": spec.judge_model, "objectives": judge.objectives}
                        if judge is not None else None),
        "sampling": config.to_dict(), "prompts": spec.prompts, "n_prompts": len(prompts),
        "candidate_set": candidate_set_name(spec.name), "fingerprint": cset.fingerprint(),
        "scores": {"rm": rm.values.tolist(),
                   "judge": judge.values.tolist() if judge is not None else None},
        # each sample's distance to the model's training texts, and what it is measured against
        "distance": {k: None if s is None or s.distance is None else s.distance.round(5).tolist()
                     for k, s in (("rm", rm), ("judge", judge))},
        "reference": {"rm": rm.reference, "judge": judge.reference if judge else None},
        "kl": [round(x, 6) for x in kl],
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, ensure_ascii=False) + "\n")
    means = (pd.DataFrame(rm.values, columns=rm.objectives)
             .assign(kl=kl, policy=cset.frame["source"].to_numpy())
             .groupby("policy", sort=False).mean().round(4))
    return {"name": spec.name, "candidate_set": candidate_set_name(spec.name),
            "policies": labels, "base_policy": base_ref,
            "mean_scores": means[rm.objectives].to_dict("index"),
            "mean_kl": means["kl"].to_dict()}


def run_compare_job(spec: CompareJob, ctx: JobContext) -> dict:
    device = ctx.device if spec.device == "auto" else spec.device
    return run_compare(ctx.store.ws, spec, device=device, progress=ctx.progress,
                       check_cancelled=ctx.check_cancelled, log=ctx.log)


register_job(CompareJob.kind, CompareJob, run_compare_job)


# -- reading a comparison back ---------------------------------------------------------------


@dataclass
class Comparison:
    """A saved comparison: ``frame`` has one row per (prompt_id, sample, policy) with prompt,
    category, response, n_tokens, n_chars, finish, ``rm:<objective>``, ``judge:<objective>``
    (with a judge) and kl; ``manifest`` is comparison.json (without the per-sample arrays)."""

    name: str
    frame: pd.DataFrame
    manifest: dict[str, Any]
    distances: dict[str, np.ndarray] = field(default_factory=dict)  # "rm"/"judge": (N,)

    @property
    def policies(self) -> list[str]:
        return [p["label"] for p in self.manifest["policies"]]

    @property
    def baseline(self) -> str:
        return self.manifest["baseline"]

    @property
    def objectives(self) -> list[str]:
        return list(self.manifest["reward_model"]["objectives"])

    @property
    def judge_objectives(self) -> list[str]:
        judge = self.manifest.get("judge_model")
        return list(judge["objectives"]) if judge else []

    @property
    def created_at(self) -> float:
        return float(self.manifest["created_at"])

    def policy(self, label: str) -> dict[str, Any]:
        """The policy's provenance (ref, kind, base, weights, scalarizer, reward model)."""
        for p in self.manifest["policies"]:
            if p["label"] == label:
                return p
        raise MormError(f"no policy {label!r} in comparison {self.name!r}", field="policy")

    def trust(self) -> list[tuple[str, SetTrust]]:
        """("rm", ...) and, with a judge, ("judge", ...): how far the samples lie from each
        model's training texts and which of its heads follow response length (characters)."""
        out = []
        for key, entry in (("rm", "reward_model"), ("judge", "judge_model")):
            model = self.manifest.get(entry)
            if not model:
                continue
            objectives, name = list(model["objectives"]), model["name"]
            scores = self.frame[[f"{key}:{o}" for o in objectives]].to_numpy()  # (N, K)
            heads = objectives if key == "rm" else [f"{name}'s {o}" for o in objectives]
            out.append((key, assess_set(
                scores, self.frame["n_chars"].to_numpy(), heads, name,
                distance=self.distances.get(key),
                reference=(self.manifest.get("reference") or {}).get(key))))
        return out


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MormError("no such comparison", file=str(path.parent)) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MormError(f"not valid JSON: {e}", file=str(path)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MormError(f"not a {FORMAT} file", file=str(path))
    return manifest


def comparison_frame(cset: CandidateSet, manifest: dict[str, Any]) -> pd.DataFrame:
    """The tidy frame of a comparison from its candidate set and manifest (see `Comparison`)."""
    f = cset.frame.reset_index(drop=True)
    meta = [json.loads(m) if m else {} for m in f["meta"]]
    out = pd.DataFrame({
        "prompt_id": f["prompt_id"], "sample": [m.get("sample", 0) for m in meta],
        "policy": f["source"], "prompt": f["prompt"], "category": f["category"],
        "response": f["response"], "n_tokens": [m.get("n_tokens") for m in meta],
        "n_chars": f["response"].str.len(), "finish": [m.get("finish") for m in meta]})
    for prefix, key, model in (("rm:", "rm", "reward_model"), ("judge:", "judge", "judge_model")):
        values = manifest["scores"].get(key)
        if values is None:
            continue
        values = np.asarray(values, dtype=float).reshape(len(f), -1)  # (N, K)
        for k, obj in enumerate(manifest[model]["objectives"]):
            out[prefix + obj] = values[:, k]
    out["kl"] = np.asarray(manifest["kl"], dtype=float)
    return out


def load_comparison(ws: Workspace, name: str) -> Comparison:
    """A saved comparison as a `Comparison`; loads no model. Raises `MormError` when it is
    missing, or when its candidate set was replaced since (another fingerprint)."""
    from morm_explorer.data.candidates import load_candidate_set

    path = ws.artifact_dir(COMPARISONS, name) / MANIFEST
    manifest = _read_manifest(path)
    cset = load_candidate_set(ws, manifest["candidate_set"])
    if cset.fingerprint() != manifest["fingerprint"] or len(cset) != len(manifest["kl"]):
        raise MormError(f"candidate set {manifest['candidate_set']!r} changed after the "
                        "comparison was made; run the comparison again", file=str(path))
    frame = comparison_frame(cset, manifest)
    light = {k: v for k, v in manifest.items() if k not in ("scores", "kl", "distance")}
    distances = {k: np.asarray(v, dtype=float) for k, v in
                 (manifest.get("distance") or {}).items() if v is not None and len(v) == len(frame)}
    return Comparison(manifest["name"], frame, light, distances)


def list_comparisons(ws: Workspace) -> list[dict[str, Any]]:
    """Saved comparisons, newest first: name, created_at, policies, n_prompts, reward_model,
    judge_model. Folders without a readable comparison.json are skipped with a warning."""
    root = ws.root / COMPARISONS
    rows = []
    for path in sorted(root.glob(f"*/{MANIFEST}")) if root.is_dir() else []:
        try:
            m = _read_manifest(path)
        except MormError as e:
            log.warning("skipping comparison folder %s: %s", path.parent, e)
            continue
        rows.append({"name": m["name"], "created_at": m["created_at"],
                     "policies": [p["label"] for p in m["policies"]],
                     "n_prompts": m["n_prompts"], "reward_model": m["reward_model"]["name"],
                     "judge_model": (m["judge_model"] or {}).get("name")})
    return sorted(rows, key=lambda r: -r["created_at"])
