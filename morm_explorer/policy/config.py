"""How a policy samples: `SamplingConfig` (light: no torch import, so job specs and the CLI
can validate it without loading a model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from morm_explorer.checks import check_int, check_number
from morm_explorer.errors import MormError

MAX_NEW_TOKENS = 4096
MAX_SAMPLES = 1024  # samples per prompt


@dataclass(frozen=True)
class SamplingConfig:
    """How `sample` draws responses (a field's name is its CLI flag's name)."""

    n: int = 4
    """Samples per prompt."""
    temperature: float = 0.8
    """Softmax temperature; 0 is greedy decoding (then the n samples are identical)."""
    top_p: float = 0.95
    """Nucleus sampling: sample from the smallest token set with this much probability."""
    max_new_tokens: int = 128
    """Most tokens generated per response (1..4096)."""
    seed: int = 0
    """Seed of the sampling; with the same prompts and config the responses repeat."""
    batch_size: int = 16
    """Sequences per generate call (a prompt's n copies count n)."""
    system: str | None = None
    """System message put before each prompt (default: the chat template's own, if any)."""

    def __post_init__(self) -> None:
        check_int("n", self.n, 1, MAX_SAMPLES)
        check_number("temperature", self.temperature)
        if self.temperature < 0:
            raise MormError(f"temperature must be >= 0 (0: greedy), got {self.temperature}",
                            field="temperature")
        check_number("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise MormError(f"top_p must be in (0, 1], got {self.top_p}", field="top_p")
        check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        check_int("seed", self.seed, 0)
        check_int("batch_size", self.batch_size, 1)
        if self.system is not None and not isinstance(self.system, str):
            raise MormError(f"system must be text, got {self.system!r}", field="system")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise MormError(f"unknown SamplingConfig fields: {', '.join(unknown)}",
                            field=unknown[0])
        return cls(**d)
