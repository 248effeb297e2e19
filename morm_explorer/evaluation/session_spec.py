"""What a rating session is, without the database: its spec, name checks, pairing and order.

`SessionSpec` is the config a session is made from and stored with. `build_items` pairs two
different policies' responses to each prompt and draws the A/B order of each item from its own
seeded RNG; `rater_order` gives each rater a shuffled order of the items of their own;
`check_answers` validates one vote. All are pure functions of their inputs, so the order a
session shows is reproducible from its spec and candidate set. The database side is `sessions`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from morm_explorer.data.candidates import CandidateSet
from morm_explorer.data.schema import is_valid_objective
from morm_explorer.errors import MormError
from morm_explorer.workspace import sanitize_name

ANSWERS: tuple[str, ...] = ("a", "b", "tie", "both_bad")
RATER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_COMMENT_CHARS = 5000


def check_rater_name(rater: object) -> str:
    """A rater name: 1-64 letters, digits, '.', '_', '@' or '-' (surrounding spaces dropped)."""
    name = rater.strip() if isinstance(rater, str) else rater
    if not isinstance(name, str) or not RATER_RE.match(name):
        raise MormError(f"invalid rater name {rater!r}: use 1-64 letters, digits, '.', '_', '@' "
                        "or '-', starting with a letter or digit", field="rater")
    return name


def _check_name_list(values: Sequence[str], fld: str, ok: Callable[[str], bool]) -> tuple:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise MormError(f"expected a list of names, got {values!r}", field=fld)
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not ok(v):
            raise MormError(f"invalid entry {v!r}", field=fld)
    if len(set(out)) != len(out):
        raise MormError(f"duplicate entries in {list(out)}", field=fld)
    return out


def _nonneg_int(value: object, fld: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MormError(f"expected an integer >= {minimum}, got {value!r}", field=fld)


@dataclass(frozen=True)
class SessionSpec:
    """What a session rates; stored as JSON with the session. ``prompts`` empty = all prompts;
    ``raters`` empty = anyone may join; ``pairs_per_rater`` 0 = every rater sees every item;
    ``reveal_after_vote`` shows a rater the policies behind A and B once they voted on an item
    (off: raters never learn them, so later votes cannot lean on a policy's name)."""

    candidate_set: str
    policies: tuple[str, ...]
    objectives: tuple[str, ...]
    raters: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    items_per_prompt: int = 1
    limit_prompts: int = 0
    pairs_per_rater: int = 0
    seed: int = 0
    fingerprint: str = ""  # the candidate set's, when the session was made
    reveal_after_vote: bool = False  # absent from sessions stored before it existed: off

    def __post_init__(self) -> None:
        if not isinstance(self.candidate_set, str) or not self.candidate_set.strip():
            raise MormError("a session needs a candidate set", field="candidate_set")
        set_ = object.__setattr__  # frozen: normalise lists to tuples once, here
        set_(self, "policies", _check_name_list(self.policies, "policies",
                                                lambda p: bool(p.strip())))
        if len(self.policies) < 2:
            raise MormError(f"a session compares at least 2 policies, got {list(self.policies)}",
                            field="policies")
        set_(self, "objectives", _check_name_list(self.objectives, "objectives",
                                                  is_valid_objective))
        if not self.objectives:
            raise MormError("a session needs at least one objective", field="objectives")
        if "overall" in self.objectives:  # the name of the optional overall choice
            raise MormError("'overall' is reserved for the overall choice; rename the objective",
                            field="objectives")
        set_(self, "raters", _check_name_list(self.raters, "raters",
                                              lambda r: bool(RATER_RE.match(r))))
        set_(self, "prompts", _check_name_list(self.prompts, "prompts",
                                               lambda p: bool(p.strip())))
        _nonneg_int(self.items_per_prompt, "items_per_prompt", 1)
        _nonneg_int(self.limit_prompts, "limit_prompts")
        _nonneg_int(self.pairs_per_rater, "pairs_per_rater")
        _nonneg_int(self.seed, "seed")
        if not isinstance(self.reveal_after_vote, bool):
            raise MormError(f"expected true or false, got {self.reveal_after_vote!r}",
                            field="reveal_after_vote")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionSpec:
        return cls(**dict(d))


def stable_hash(text: str) -> int:
    """A 32-bit hash of a text that is the same in every process (unlike `hash`)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def check_session_name(name: object) -> str:
    """A session name as typed by raters: it must already be a clean artifact name."""
    clean = sanitize_name(name)  # type: ignore[arg-type]
    if clean != name:
        raise MormError(f"invalid session name {name!r}: use letters, digits, '.', '_' or '-' "
                        f"(e.g. {clean!r})", field="name")
    return clean


def build_items(cset: CandidateSet, spec: SessionSpec, name: str
                 ) -> tuple[list[tuple], list[str], dict[str, int]]:
    """Item rows (item_id, prompt_id, prompt, category, row_a, row_b, response_a, response_b,
    policy_a, policy_b, flipped), the prompt ids used, and counts of what was skipped."""
    frame = cset.frame  # row position = candidate index (scores use the same rows)
    prompt_ids = cset.prompts()["prompt_id"].tolist()
    if spec.prompts:
        unknown = sorted(set(spec.prompts) - set(prompt_ids))
        if unknown:
            raise MormError(f"prompts not in the candidate set: {unknown[:5]}", field="prompts")
        prompt_ids = [p for p in prompt_ids if p in set(spec.prompts)]
    rows_of: dict[tuple[str, str], list[int]] = {}
    for pos, (pid, src) in enumerate(zip(frame["prompt_id"], frame["source"], strict=True)):
        rows_of.setdefault((pid, src), []).append(pos)
    avail_of = {pid: [p for p in spec.policies if (pid, p) in rows_of]  # session policy order
                for pid in prompt_ids}
    eligible = [pid for pid in prompt_ids if len(avail_of[pid]) >= 2]
    skipped = {"prompts_with_fewer_than_2_policies": len(prompt_ids) - len(eligible),
               "identical_responses": 0, "pairs_short": 0}
    rng = np.random.default_rng(spec.seed)
    if 0 < spec.limit_prompts < len(eligible):  # a seeded sample, kept in set order
        keep = np.sort(rng.choice(len(eligible), spec.limit_prompts, replace=False))
        eligible = [eligible[i] for i in keep]
    items: list[tuple] = []
    used: list[str] = []
    name_key = stable_hash(name)
    for pid in eligible:
        avail = avail_of[pid]
        pairs = [(p, q) for i, p in enumerate(avail) for q in avail[i + 1:]]
        made = 0
        for j in rng.permutation(len(pairs)):
            if made == spec.items_per_prompt:
                break
            p, q = pairs[j]
            rp = rows_of[(pid, p)][rng.integers(len(rows_of[(pid, p)]))]
            rq = rows_of[(pid, q)][rng.integers(len(rows_of[(pid, q)]))]
            if str(frame["response"].iat[rp]).strip() == str(frame["response"].iat[rq]).strip():
                skipped["identical_responses"] += 1  # a pair of equal texts carries no choice
                continue
            item_id = len(items) + 1
            # The order is drawn once per item from its own seeded RNG, independent of policies.
            flipped = int(np.random.default_rng([spec.seed, name_key, item_id]).integers(2))
            (ra, pa), (rb, pb) = ((rq, q), (rp, p)) if flipped else ((rp, p), (rq, q))
            items.append((item_id, pid, str(frame["prompt"].iat[ra]), frame["category"].iat[ra],
                          int(ra), int(rb), str(frame["response"].iat[ra]),
                          str(frame["response"].iat[rb]), pa, pb, flipped))
            made += 1
        skipped["pairs_short"] += spec.items_per_prompt - made
        if made:
            used.append(pid)
    return items, used, skipped


def rater_order(spec: SessionSpec, session: str, rater: str, n_items: int) -> list[int]:
    """The item ids a rater sees, in a shuffled order of their own (seeded by session, rater
    and seed), cut to ``pairs_per_rater`` when set."""
    rng = np.random.default_rng([spec.seed, stable_hash(session), stable_hash(rater)])
    order = (rng.permutation(n_items) + 1).tolist()
    return order[:spec.pairs_per_rater] if spec.pairs_per_rater else order


def check_answers(spec: SessionSpec, answers: Mapping[str, str], overall: str | None,
                  comment: str) -> tuple[dict[str, str], str | None]:
    """One vote's answers (every objective, each in `ANSWERS`, case and spaces ignored) and
    overall choice, normalised; raises `MormError` naming the field otherwise."""
    if not isinstance(answers, Mapping):
        raise MormError(f"answers must map objective -> answer, got {answers!r}",
                        field="answers")
    missing = [o for o in spec.objectives if o not in answers]
    unknown = [o for o in answers if o not in spec.objectives]
    if missing or unknown:
        raise MormError(f"answer every objective of the session {list(spec.objectives)}"
                        + (f"; missing {missing}" if missing else "")
                        + (f"; unknown {unknown}" if unknown else ""), field="answers")
    out = {}
    for obj in spec.objectives:
        value = answers[obj]
        if not isinstance(value, str) or value.strip().lower() not in ANSWERS:
            raise MormError(f"answer {value!r}: expected one of {', '.join(ANSWERS)}",
                            field=f"answers.{obj}")
        out[obj] = value.strip().lower()
    if overall is not None and (not isinstance(overall, str)
                                or overall.strip().lower() not in ANSWERS):
        raise MormError(f"overall {overall!r}: expected none or one of {', '.join(ANSWERS)}",
                        field="overall")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise MormError(f"a comment is text of at most {MAX_COMMENT_CHARS} characters",
                        field="comment")
    return out, overall.strip().lower() if overall is not None else None


def answer_column(dimension: str) -> str:
    """The vote-frame column of an objective (``answer:<objective>``) or of ``overall``."""
    return "overall" if dimension == "overall" else f"answer:{dimension}"
