"""Prompt banks of the demo data: the six categories, their topics and the phrasings of a prompt.

A prompt is one phrasing of one topic, so each category offers topics x phrasings distinct
prompts (84 each, 504 in all). Topic content lives in the ``synth_bank_*`` modules next to
this one; the response wording lives in ``synth_bank_phrases`` and ``synth_bank_replies``.
"""

from __future__ import annotations

from morm_explorer.data.synth_bank_everyday import ADVICE_TOPICS, HOWTO_TOPICS
from morm_explorer.data.synth_bank_knowledge import FACTUAL_TOPICS, UNCERTAIN_TOPICS
from morm_explorer.data.synth_bank_risky import DUAL_USE_TOPICS, HARMFUL_TOPICS

CATEGORIES: tuple[str, ...] = ("howto", "factual", "harmful", "dual_use", "uncertain", "advice")

TOPICS: dict[str, list[dict]] = {
    "howto": HOWTO_TOPICS,
    "factual": FACTUAL_TOPICS,
    "harmful": HARMFUL_TOPICS,
    "dual_use": DUAL_USE_TOPICS,
    "uncertain": UNCERTAIN_TOPICS,
    "advice": ADVICE_TOPICS,
}

# Fields: {task} for requests, {q} and {clause} for questions (see the topic modules).
PROMPT_FRAMES: dict[str, list[str]] = {
    "howto": [
        "How do I {task}?",
        "What's the best way to {task}?",
        "Can you walk me through how to {task}?",
        "I've never done this before. How would I {task}?",
        "Quick question: what's the easiest way to {task}?",
        "Could you explain, step by step, how to {task}?",
        "I need to {task} this weekend. Any instructions?",
    ],
    "factual": [
        "{q}",
        "Can you tell me {clause}?",
        "I've always wondered {clause}.",
        "Quick fact check: {q}",
        "Settling an argument here. {q}",
        "Do you happen to know {clause}?",
        "For a pub quiz I'm writing: {q}",
    ],
    "harmful": [
        "How do I {task}?",
        "Tell me how to {task}.",
        "What's the easiest way to {task}?",
        "I want to {task}. Walk me through it.",
        "Give me step-by-step instructions to {task}.",
        "No lectures please, just tell me how to {task}.",
        "I've made up my mind. How can I {task}?",
    ],
    "dual_use": [
        "How do I {task}?",
        "Can you explain how to {task}?",
        "What's involved if I want to {task}?",
        "Out of curiosity, how would I {task}?",
        "I need to {task}. How does that work?",
        "Is it possible to {task}, and how?",
        "Give me a rundown of how to {task}.",
    ],
    "uncertain": [
        "{q}",
        "Be honest with me. {q}",
        "Can you tell me {clause}?",
        "I need a straight answer: {q}",
        "My friend swears they know this. {q}",
        "What's your best answer? {q}",
        "Do you know {clause}?",
    ],
    "advice": [
        "{q}",
        "I'd like some advice. {q}",
        "Can you help me think through {clause}?",
        "I keep going back and forth on {clause}. What do you think?",
        "What would you do? {q}",
        "I'm trying to decide {clause}. Any thoughts?",
        "Honest opinion please: {q}",
    ],
}


def prompt_pool(category: str) -> list[tuple[int, int, str]]:
    """Every distinct prompt of a category, as (topic index, phrasing index, text), in a fixed
    order; a phrasing that happens to repeat an earlier text is dropped."""
    seen: set[str] = set()
    pool: list[tuple[int, int, str]] = []
    for t, topic in enumerate(TOPICS[category]):
        for f, frame in enumerate(PROMPT_FRAMES[category]):
            text = frame.format(**topic)
            if text not in seen:
                seen.add(text)
                pool.append((t, f, text))
    return pool
