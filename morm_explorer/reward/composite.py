"""Composite rewards: K objectives, each scored by a part of its own, behind the one
interface ``score(prompts, responses) -> (N, K)``.

`compose` (`morm rm compose NAME --part OBJECTIVE=SPEC ...`) writes reward_models/<NAME> as a
manifest (`reward.manifest`). A part's SPEC is one of

- ``MODEL`` or ``MODEL:OBJECTIVE``: an objective of a reward model of the workspace, trained or
  external (a bare name for a model with one objective). Composites are not parts: compose from
  their parts;
- ``rule:length``, ``rule:refusal``, ``rule:regex=PATTERN``, ``rule:format=json`` (`reward.rules`);
- ``py:FILE:FUNCTION``: a reward function with TRL's signature, only with ``allow_code``.

The manifest names each model part by its folder in the workspace (read when the composite
loads: a retrained part changes the composite's scores, and its fingerprint), and each code
part by its absolute path and the sha256 of its file: no code is copied. ``allow_code`` is
stored only when given at compose time; a composite with code parts loads only when its
manifest says so and the file is unchanged (the consent was given for that code).

Each part scores on its own (a model loaded once however many objectives it gives, in its own
batches and with its own tokenizer), so the composite scores exactly as its parts do. Its
statistics come from scoring the reference set with the composite itself, as for external
models: rules and functions get statistics too, and a model part's are its raw scores' on
these texts (not the ones its folder stores, which may come from other texts).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from morm_explorer.checks import check_number
from morm_explorer.data.schema import is_valid_objective
from morm_explorer.errors import MormError
from morm_explorer.reward.config import check_stats, read_config
from morm_explorer.reward.manifest import (
    GROUP,
    check_free,
    manifest,
    model_kind,
    nan_stats,
    reference_texts,
    write_manifest,
)
from morm_explorer.reward.rules import check_rule, rule_scores, run_function
from morm_explorer.workspace import Workspace, sanitize_name

PART_HELP = ("expected OBJECTIVE=SPEC, SPEC one of MODEL, MODEL:OBJECTIVE, rule:length, "
             "rule:refusal, rule:regex=PATTERN, rule:format=json, py:FILE:FUNCTION")


@dataclass(frozen=True)
class Part:
    """One objective of a composite and what scores it."""

    objective: str
    kind: str  # "model", "rule" or "py"
    spec: str  # as the user wrote it
    model: str = ""  # model: its folder name in the workspace, and which of its objectives
    model_objective: str = ""
    rule: str = ""  # rule: its name and argument
    argument: str = ""
    file: str = ""  # py: absolute path, sha256 of the file, function name
    sha256: str = ""
    function: str = ""

    @classmethod
    def from_dict(cls, d: object, file: str) -> Part:
        try:
            part = cls(**d)  # type: ignore[arg-type]
        except TypeError as e:
            raise MormError(f"a part is not valid: {e}", file=file, field="parts") from e
        if part.kind not in ("model", "rule", "py") or not is_valid_objective(part.objective) \
                or (part.kind == "model" and part.model != sanitize_name(part.model)):
            raise MormError(f"a part is not valid: {d!r:.120}", file=file, field="parts")
        if part.kind == "rule":
            check_rule(part.rule, part.argument, part.objective)
        return part


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_part(ws: Workspace, text: str) -> Part:
    """A ``--part OBJECTIVE=SPEC`` (see the module docstring), checked against the workspace."""
    objective, sep, spec = (x.strip() for x in text.partition("="))
    if not sep or not spec or not is_valid_objective(objective):
        raise MormError(f"{PART_HELP}; got {text!r}", field="part")
    if spec.startswith("rule:"):
        rule, _, argument = spec[5:].partition("=")
        check_rule(rule, argument, objective)
        return Part(objective, "rule", spec, rule=rule, argument=argument)
    if spec.startswith("py:"):
        file, _, function = spec[3:].rpartition(":")
        path = Path(file).expanduser().resolve()
        if not function.isidentifier() or path.suffix != ".py":
            raise MormError(f"part {objective!r}: expected py:FILE.py:FUNCTION, got {spec!r}",
                            field="part")
        if not path.is_file():
            raise MormError(f"part {objective!r}: no such file", file=str(path), field="part")
        return Part(objective, "py", spec, file=str(path), sha256=_sha256(path),
                    function=function)
    name, _, wanted = spec.partition(":")
    folder = ws.artifact_dir(GROUP, name)
    if not (folder / "config.json").is_file():
        raise MormError(f"part {objective!r}: no reward model named {name!r} in the workspace",
                        field="part")
    config = read_config(folder)
    if model_kind(config) == "composite":
        raise MormError(f"part {objective!r}: {name!r} is a composite; compose from its parts",
                        field="part")
    objectives = list(config["model"]["objectives"])
    if not wanted and len(objectives) > 1:
        raise MormError(f"part {objective!r}: {name!r} has {len(objectives)} objectives; pick "
                        f"one: {', '.join(f'{name}:{o}' for o in objectives)}", field="part")
    wanted = wanted or objectives[0]
    if wanted not in objectives:
        raise MormError(f"part {objective!r}: {name!r} has no objective {wanted!r} (it has "
                        f"{', '.join(objectives)})", field="part")
    return Part(objective, "model", spec, model=folder.name, model_objective=wanted)


class CompositeRewardModel:
    """Parts behind the reward-model interface: ``score(prompts, responses) -> (N, K)``, one
    column per part, NaN where a reward function answered None."""

    frozen_backbone = False  # no embedding cache: each part scores in full

    def __init__(self, parts: list[Part], models: dict[str, object], time_limit: float) -> None:
        self.parts, self.models, self.time_limit = parts, models, time_limit
        self.stats: dict | None = None
        self.artifact_config: dict = {}

    @property
    def objectives(self) -> list[str]:
        return [p.objective for p in self.parts]

    @property
    def device(self) -> torch.device:
        return next((m.device for m in self.models.values()), torch.device("cpu"))

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64,
              progress=None) -> np.ndarray:
        """(N, K) float32: each model part once, then rules and functions; ``progress(done,
        total)`` after each model and each other part, in texts."""
        n, steps = len(prompts), len(self.models) + sum(p.kind != "model" for p in self.parts)
        out = np.full((n, len(self.parts)), np.nan, dtype=np.float32)
        done = 0
        for name, model in self.models.items():
            scores = model.score(prompts, responses, batch_size=batch_size)  # (N, K_model)
            for k, p in enumerate(self.parts):
                if p.model == name:
                    out[:, k] = scores[:, model.objectives.index(p.model_objective)]
            done += 1
            if progress is not None:
                progress(n * done // steps, n)
        for k, p in enumerate(self.parts):
            if p.kind == "model":
                continue
            if p.kind == "rule":
                out[:, k] = rule_scores(p.rule, p.argument, list(responses), p.objective)
            else:
                out[:, k] = run_function(p.file, p.function, list(prompts), list(responses),
                                         part=p.objective, batch_size=batch_size,
                                         time_limit=self.time_limit)
            done += 1
            if progress is not None:
                progress(n * done // steps, n)
        return out


def build(folder: Path, parts: list[Part], *, allow_code: bool, time_limit: float,
          device: str = "cpu", file: str = "") -> CompositeRewardModel:
    """The composite of ``parts``, its model parts read from ``folder`` (reward_models/)."""
    from morm_explorer.reward.artifact import load_reward_model

    models: dict[str, object] = {}
    for p in parts:
        if p.kind == "py":
            path = Path(p.file)
            if not allow_code:
                raise MormError(f"part {p.objective!r} runs Python code from {p.file}: that "
                                "needs consent (--allow-code when composing)", file=file or None,
                                field="allow_code")
            if not path.is_file() or _sha256(path) != p.sha256:
                raise MormError(f"part {p.objective!r}: the code file is gone or changed since "
                                "the composite was made with --allow-code; compose it again "
                                "to allow the new code", file=p.file)
        if p.kind == "model" and p.model not in models:
            config = read_config(folder / p.model)
            if model_kind(config) == "composite":
                raise MormError(f"part {p.objective!r}: {p.model!r} is a composite",
                                file=file or None, field="parts")
            models[p.model] = load_reward_model(folder / p.model, device)
        if p.kind == "model" and p.model_objective not in models[p.model].objectives:
            raise MormError(f"part {p.objective!r}: {p.model!r} has no objective "
                            f"{p.model_objective!r} any more", file=file or None, field="parts")
    return CompositeRewardModel(parts, models, time_limit)


def _check_parts(parts: list[Part]) -> None:
    if not parts:
        raise MormError("a composite needs at least one --part", field="part")
    names = [p.objective for p in parts]
    if len(set(names)) != len(names):
        raise MormError(f"two parts for one objective in {names}", field="part")


def compose(ws: Workspace, name: str, parts: list[str], *, allow_code: bool = False,
            reference: str | None = None, time_limit: float = 60.0, device: str = "cpu",
            overwrite: bool = False, progress=None) -> Path:
    """Make composite reward model ``name`` from ``parts`` (``OBJECTIVE=SPEC`` texts): check
    every part, score the reference set for the statistics, then write the manifest (all or
    nothing). ``time_limit``: seconds per batch of a Python part."""
    from morm_explorer.jobs.context import detect_device

    target = check_free(ws, name, overwrite)
    device = detect_device() if device == "auto" else device
    parsed = [parse_part(ws, p) for p in parts]
    _check_parts(parsed)
    check_number("time_limit", time_limit, low=0, low_open=True, high=3600)
    if any(p.model == target.name for p in parsed):
        raise MormError(f"a composite cannot be a part of itself ({target.name!r})",
                        field="part")
    ref = reference_texts(ws, reference)
    model = build(target.parent, parsed, allow_code=allow_code, time_limit=time_limit,
                  device=device)
    stats = nan_stats(model.score(ref.prompts, ref.responses, progress=progress))
    described = ", ".join(f"{p.objective}={p.spec}" for p in parsed)
    config = manifest("composite", model.objectives, described, stats, ref,
                      parts=[asdict(p) for p in parsed], allow_code=bool(allow_code),
                      time_limit=float(time_limit))
    return write_manifest(ws, name, config, overwrite)


def load_composite(path: Path, config: dict, device: str = "cpu") -> CompositeRewardModel:
    """The model of a composite manifest (`compose`), checked against it."""
    file = str(path / "config.json")
    raw = config.get("parts")
    if not isinstance(raw, list):
        raise MormError("a composite's manifest needs a list of parts", file=file,
                        field="parts")
    parts = [Part.from_dict(d, file) for d in raw]
    _check_parts(parts)
    if list(config.get("model", {}).get("objectives", [])) != [p.objective for p in parts]:
        raise MormError("model.objectives differ from the parts' objectives", file=file,
                        field="model.objectives")
    check_stats(config.get("stats"), [p.objective for p in parts], file)
    time_limit = config.get("time_limit", 60.0)
    check_number("time_limit", time_limit, low=0, low_open=True, high=3600)
    model = build(path.parent, parts, allow_code=config.get("allow_code") is True,
                  time_limit=float(time_limit), device=device, file=file)
    model.stats, model.artifact_config = config.get("stats"), config
    return model
