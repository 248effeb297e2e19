"""What `morm rm add` takes, `ExternalConfig`: kept apart from `reward.external` so that
building the command line loads no torch."""

from __future__ import annotations

from dataclasses import dataclass

from morm_explorer.checks import check_int
from morm_explorer.data.schema import is_valid_objective
from morm_explorer.errors import MormError
from morm_explorer.reward.config import _DictMixin


@dataclass(frozen=True, kw_only=True)
class ExternalConfig(_DictMixin):
    """What `morm rm add` takes (its flags have these names)."""

    model: str
    """Hugging Face model name, or local folder, of an AutoModelForSequenceClassification."""
    objective: str = ""
    """The objective of a model with one output (default: reward)."""
    objectives: tuple[str, ...] = ()
    """The objectives of a model with K outputs, in output order (default: its id2label)."""
    revision: str = ""
    """Hub revision (branch, tag or commit) of a hub name, recorded with it."""
    trust_remote_code: bool = False
    """Run the model's own code (a config with auto_map): refused without this flag."""
    max_length: int = 1024
    """Tokens per conversation; longer ones are cut (decoders keep the end)."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise MormError("name a model: a Hugging Face name or a local folder", field="model")
        if self.objective and self.objectives:
            raise MormError("pass --objective (one output) or --objectives (K outputs), not "
                            "both", field="objectives")
        for o in (self.objective, *self.objectives):
            if o and not is_valid_objective(o):
                raise MormError(f"invalid objective name {o!r}", field="objectives")
        if len(set(self.objectives)) != len(self.objectives):
            raise MormError(f"duplicate objectives in {list(self.objectives)}",
                            field="objectives")
        check_int("max_length", self.max_length, 8)
