"""Composes one demo response from the wording banks: opener + behaviour body + closer.

`write_response` is the only entry point. All choices come from the ``random.Random`` passed
in, so a response is a pure function of the generator's seed.
"""

from __future__ import annotations

import random
import re

from morm_explorer.data.synth_bank import TOPICS
from morm_explorer.data.synth_bank_phrases import (
    CLOSERS,
    COMPLIANCE,
    DETAILED,
    FABRICATED,
    FLAT_REFUSALS,
    MUSINGS,
    OFF_TOPIC_FRAMES,
    OPENERS,
    REDIRECT_ALT,
    REDIRECT_REFUSE,
    REDIRECT_WHY,
    REFUSAL_TAILS,
    SHARED_OPENERS,
    TERSE,
    TRIVIA,
    UNCERTAIN_BODIES,
)

# Requests are written in the first person ("my ex's email"); a reply talks back in the second.
_SECOND_PERSON = [
    (r"\bmy\b", "your"), (r"\bme\b", "you"), (r"\bI'm\b", "you're"), (r"\bI\b", "you"),
]
_PROSE_LINKS = ["Then ", "Next, ", "After that, "]


def _you(text: str) -> str:
    for pattern, repl in _SECOND_PERSON:
        text = re.sub(pattern, repl, text)
    return text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _list_block(rng: random.Random, items: list[str], clauses: bool) -> str:
    """A list in one of several layouts; ``clauses`` says the items are lower-case clauses
    (steps) rather than full sentences (points)."""
    lines = [_cap(i) + "." for i in items] if clauses else list(items)
    style = rng.randrange(4)
    if style == 0:
        return "\n".join(f"{n}. {line}" for n, line in enumerate(lines, 1))
    if style == 1:
        return "\n".join(f"- {line}" for line in lines)
    if style == 2 and clauses:
        return "\n".join(f"Step {n}: {line}" for n, line in enumerate(lines, 1))
    if not clauses:
        return " ".join(lines)
    prose = [f"First, {items[0]}."]
    for i, item in enumerate(items[1:-1]):
        prose.append(_PROSE_LINKS[(i + rng.randrange(3)) % 3] + item + ".")
    prose.append(f"Finally, {items[-1]}.")
    return " ".join(prose)


def _fields(category: str, topic: dict, rng: random.Random) -> dict[str, str]:
    """The template fields for one response (points are shuffled per response)."""
    f = {k: v for k, v in topic.items() if isinstance(v, str)}
    f["task"] = _you(topic.get("task", ""))
    steps = topic.get("steps") or topic.get("sketch") or ["", ""]  # unused by these topics
    f.update(s0=steps[0], S0=_cap(steps[0]), s1=steps[1], s_last=steps[-1])
    points = list(topic.get("points", []))
    rng.shuffle(points)
    f["p0"], f["p1"] = (points + ["", ""])[:2]
    if "short" in topic:
        f["Short"] = _cap(topic["short"])
    if "why" in topic:
        f["Why"] = _cap(topic["why"])
    return f


def _detailed(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    if category == "howto":
        block = _list_block(rng, topic["steps"], clauses=True)
    elif category in ("advice", "dual_use"):
        points = list(topic["points"])
        rng.shuffle(points)
        block = _list_block(rng, points, clauses=False)
    else:
        block = ""
    return rng.choice(DETAILED[category]).format(**f, steps=block)


def _terse(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    return rng.choice(TERSE[category]).format(**f)


def _flat_refusal(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    head = rng.choice(FLAT_REFUSALS).format(**f)
    return f"{head} {rng.choice(REFUSAL_TAILS)}".strip()


def _redirect_refusal(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    parts = [rng.choice(REDIRECT_REFUSE), rng.choice(REDIRECT_WHY), rng.choice(REDIRECT_ALT)]
    if rng.random() < 0.3:
        parts[0], parts[1] = parts[1], parts[0]  # reason first, then the refusal
    return " ".join(parts).format(**f)


def _honest_uncertainty(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    return rng.choice(UNCERTAIN_BODIES[category]).format(**f)


def _fabrication(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    block = ""
    if category == "howto":
        steps = list(topic["steps"])
        steps.insert(rng.randrange(1, len(steps) + 1), topic["wrong"])
        block = _list_block(rng, steps, clauses=True)
    return rng.choice(FABRICATED[category]).format(**f, steps=block)


def _compliance(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    block = _list_block(rng, topic["sketch"], clauses=True)
    return rng.choice(COMPLIANCE).format(**f, steps=block)


def _off_topic(category: str, topic: dict, f: dict, rng: random.Random) -> str:
    # Content borrowed from other topics keeps off-topic replies fluent and on some subject,
    # so only reading the prompt alongside the reply shows they miss the point.
    other_howto = rng.choice([t for t in TOPICS["howto"] if t is not topic])
    other_fact = rng.choice([t for t in TOPICS["factual"] if t is not topic])
    fact = rng.choice(TRIVIA) if rng.random() < 0.5 else other_fact["answer"]
    musing = rng.choice(MUSINGS).format(
        other_task=_you(other_howto["task"]), other_step=rng.choice(other_howto["steps"]),
        other_fact=other_fact["answer"])
    return rng.choice(OFF_TOPIC_FRAMES).format(fact=fact, musing=musing)


_WRITERS = {
    "detailed_help": _detailed,
    "terse_help": _terse,
    "flat_refusal": _flat_refusal,
    "redirect_refusal": _redirect_refusal,
    "honest_uncertainty": _honest_uncertainty,
    "confident_fabrication": _fabrication,
    "harmful_compliance": _compliance,
    "off_topic": _off_topic,
}
BEHAVIOURS: tuple[str, ...] = tuple(_WRITERS)


def _opener(behaviour: str, rng: random.Random) -> str:
    own = OPENERS.get(behaviour, [])
    r = rng.random()
    if behaviour in ("flat_refusal", "redirect_refusal"):
        # Refusals mostly open straight away; their openers already include shared phrases
        # (a cheerful "Great question!" before a refusal would read oddly).
        return rng.choice(own) if r < 0.35 else ""
    if own and r < 0.45:
        return rng.choice(own)
    if r < 0.75:
        return rng.choice(SHARED_OPENERS)
    return ""


def write_response(behaviour: str, category: str, topic: dict, rng: random.Random) -> str:
    """One response showing ``behaviour`` to a prompt about ``topic`` of ``category``."""
    f = _fields(category, topic, rng)
    body = _WRITERS[behaviour](category, topic, f, rng)
    opener = _opener(behaviour, rng)
    closer = rng.choice(CLOSERS.get(behaviour, [""]))
    text = f"{opener} {body}".strip() if opener else body
    if closer:
        text += ("\n" if "\n" in body else " ") + closer
    return text
