"""Named scalarization settings: weights per objective, the scalarizer, standardization and
constraints. Saved in the workspace database so the Explore page, the Fine-tune page and the
CLI share them; a few built-in presets exist for whatever objectives a model has."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from morm_explorer.errors import MormError
from morm_explorer.objectives import SCALARIZERS, Constraint
from morm_explorer.workspace import Workspace, sanitize_name


@dataclass(frozen=True)
class WeightPreset:
    name: str
    weights: dict[str, float]
    scalarizer: str = "weighted_sum"
    standardized: bool = True
    constraints: list[dict] = field(default_factory=list)  # [{"objective", "threshold"}]

    def __post_init__(self) -> None:
        if not isinstance(self.weights, dict) or not self.weights:
            raise MormError("a preset needs at least one weight", field="weights")
        for k, v in self.weights.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise MormError(f"weight of {k!r} must be a finite number >= 0, got {v!r}",
                                field=f"weights.{k}")
        if self.scalarizer not in SCALARIZERS:
            raise MormError(f"unknown scalarizer {self.scalarizer!r}", field="scalarizer")
        for i, c in enumerate(self.constraints):
            if not isinstance(c, dict) or set(c) != {"objective", "threshold"}:
                raise MormError(f"a constraint is {{'objective': name, 'threshold': number}}, "
                                f"got {c!r}", field=f"constraints[{i}]")
            Constraint(c["objective"], c["threshold"])

    def constraint_objects(self) -> list[Constraint]:
        return [Constraint(c["objective"], c["threshold"]) for c in self.constraints]


def builtin_presets(objectives: Sequence[str]) -> list[WeightPreset]:
    """Equal weights, and one preset leaning on each objective (0.6, the rest share 0.4)."""
    objs = list(objectives)
    out = [WeightPreset("equal", {o: 1.0 / len(objs) for o in objs})]
    if len(objs) > 1:
        for lead in objs:
            rest = 0.4 / (len(objs) - 1)
            out.append(WeightPreset(f"{lead}-first",
                                    {o: 0.6 if o == lead else rest for o in objs}))
    return out


def save_preset(ws: Workspace, preset: WeightPreset, overwrite: bool = True) -> WeightPreset:
    name = sanitize_name(preset.name)
    body = {k: v for k, v in asdict(preset).items() if k != "name"}
    with ws.transaction() as con:
        if not overwrite and con.execute("SELECT 1 FROM weight_presets WHERE name=?",
                                         (name,)).fetchone():
            raise MormError(f"a preset named {name!r} exists", field="name")
        con.execute("INSERT OR REPLACE INTO weight_presets VALUES (?,?,?)",
                    (name, json.dumps(body), time.time()))
    return WeightPreset(name=name, **body)


def list_presets(ws: Workspace) -> list[WeightPreset]:
    with ws.reading() as con:
        rows = con.execute("SELECT name, preset FROM weight_presets ORDER BY name").fetchall()
    out = []
    for r in rows:
        try:
            out.append(WeightPreset(name=r["name"], **json.loads(r["preset"])))
        except (MormError, TypeError, ValueError, KeyError):
            continue  # a damaged row is skipped, not fatal
    return out


def delete_preset(ws: Workspace, name: str) -> None:
    with ws.transaction() as con:
        con.execute("DELETE FROM weight_presets WHERE name=?", (sanitize_name(name),))
