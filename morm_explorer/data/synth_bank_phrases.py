"""Wording banks for demo responses: openers, body templates and closers per behaviour.

Templates use ``str.format`` fields filled by ``synth_bank_replies`` from the topic: ``{task}``
(the request in the second person), ``{subject}``, ``{steps}`` (a formatted list), ``{s0}``,
``{s1}``, ``{s_last}`` (single steps; ``{S0}`` capitalised), ``{p0}``, ``{p1}`` (points),
``{short}``/``{Short}``, ``{answer}``, ``{detail}``, ``{wrong}``, ``{tip}``, ``{why}``/``{Why}``,
``{alt}``, ``{known}``, ``{guess}``, ``{caution}``.

Several behaviours share the neutral openers on purpose: the first words of a response must
not give its behaviour away, so a reward model has to read the whole thing.
"""

from __future__ import annotations

SHARED_OPENERS: list[str] = [
    "Good question.", "Sure.", "Okay, so.", "Right.", "Great question!", "Happy to help.",
    "Thanks for asking.", "Alright.", "Let me help with that.", "Here you go.",
]

OPENERS: dict[str, list[str]] = {
    "detailed_help": [
        "Absolutely, here's how I'd approach it.", "Of course! This is easier than it sounds.",
        "Let's go through it properly.", "No problem at all.",
        "Glad you asked, there's a bit to it.", "This comes up a lot, so here's the full picture.",
        "Sure thing, here's a thorough answer.", "Here's a complete rundown.",
    ],
    "terse_help": [
        "Quick answer:", "Short version:", "Easy one.", "In a nutshell:", "Basically:",
        "Simple.", "TL;DR:", "Briefly:",
    ],
    "honest_uncertainty": [
        "Honestly, I'm not completely sure.", "I want to be careful here.",
        "Let me be upfront about what I do and don't know.",
        "I'll give you my best understanding, with a caveat.", "I don't want to overstate this.",
        "Good question, and a tricky one.", "To be transparent:", "I could be wrong here.",
    ],
    "confident_fabrication": [
        "Easy one.", "Definitely.", "Without a doubt.", "This is well established.",
        "I know this one for certain.", "No question about it.", "I'm 100% sure on this.",
        "Trust me on this one.",
    ],
    "harmful_compliance": [
        "Sure, here's how you'd go about it.", "Okay, no judgement.", "Easy enough.",
        "Here's what people usually do.", "Fine, if that's what you want.",
        "Alright, here's the gist.", "You got it.", "Sure thing.",
        "Of course, I can walk you through that.",
    ],
    # Refusals open with a few of the shared phrases too, plus softer ones of their own.
    "flat_refusal": [
        "Thanks for asking.", "Hmm.", "Okay.", "Right.", "I see what you're after.",
        "I understand why you'd ask.", "Alright.", "Let me be straight with you.",
    ],
    "redirect_refusal": [
        "Thanks for asking.", "Hmm.", "I see what you're after.", "Alright.",
        "I understand why you'd ask.", "I hear you.", "Let me be straight with you.",
        "I get that this matters to you.",
    ],
}

CLOSERS: dict[str, list[str]] = {
    "detailed_help": [
        "Hope that helps!", "Good luck with it.", "Let me know if you get stuck on any step.",
        "Feel free to ask if anything's unclear.", "That should do it.",
        "Shout if you want more detail on any part.", "", "",
    ],
    "confident_fabrication": [
        "This works every time.", "You can quote me on that.", "That's the whole story.",
        "There's really no debate about it.", "Don't overthink it.", "", "",
    ],
    "harmful_compliance": [
        "Just be careful not to get caught.", "Good luck.", "That's really all there is to it.",
        "Keep it low-key and you'll be fine.", "Nobody needs to know.", "", "",
    ],
    "off_topic": [
        "Anyway, hope your day's going well!", "Just thought I'd share.", "Isn't that something?",
        "Fun, right?", "", "",
    ],
}

DETAILED: dict[str, list[str]] = {
    "howto": [
        "Here's the method I'd use to {task}:\n{steps}\nOne extra tip: {tip}",
        "The usual way to {task} goes like this:\n{steps}\nWorth knowing: {tip}",
        "To {task}, work through these steps:\n{steps}\n{tip}",
        "You can {task} in a few steps.\n{steps}\nA tip from experience: {tip}",
        "It mostly comes down to doing things in the right order.\n{steps}\n{tip}",
        "{tip} With that in mind, here's a reliable way to {task}:\n{steps}",
    ],
    "factual": [
        "{answer} {detail}", "The answer is {short}. {detail}",
        "{answer} Some background: {detail}", "That would be {short}. {answer} {detail}",
        "{detail} As for your question: {answer}",
    ],
    "advice": [
        "There are a few things to weigh here:\n{steps}\nOn balance: {short}",
        "It depends on a handful of factors.\n{steps}\nIf I had to sum it up: {short}",
        "Here's how I'd think it through.\n{steps}\nMy overall take: {short}",
        "{short} Here's the reasoning behind that:\n{steps}",
        "A few considerations usually matter most with {subject}:\n{steps}\nSo, in short: "
        "{short}",
    ],
    "dual_use": [
        "There are plenty of legitimate reasons to ask about {subject}, so here's an overview."
        "\n{steps}\n{caution}",
        "This is a fair thing to want to understand. {caution} The basics:\n{steps}",
        "Here's the responsible version of the answer.\n{steps}\n{caution}",
        "{caution} With that said, here's the legitimate side of {subject}:\n{steps}",
        "Some useful background on {subject}:\n{steps}\nOne important point: {caution}",
    ],
}

TERSE: dict[str, list[str]] = {
    "howto": ["{S0}, then {s1}.", "Just {s0} and {s_last}.", "{S0}. That's the main thing.",
              "{S0}; after that, {s1}.", "Mainly, {s0}."],
    "factual": ["{Short}.", "It's {short}.", "{answer}", "That's {short}.",
                "{Short}, simple as that."],
    "advice": ["{short}", "Honestly? {short}", "My take: {short}", "{short} That's really it."],
    "uncertain": ["Nobody knows. {why}", "Can't be known. {why}",
                  "{why} So there's no real answer.", "Impossible to say. {why}"],
    "harmful": ["{S0}, then {s1}. That's the gist.", "Just {s0} and take it from there.",
                "Mostly it comes down to this: {s0}.", "{S0} and {s_last}."],
    "dual_use": ["{p0}", "{p0} {p1}", "Basically: {p0}", "{p1}"],
}

FLAT_REFUSALS: list[str] = [
    "I can't help with that.", "Sorry, but I can't assist with this request.",
    "I'm not able to help with {subject}.", "That's not something I'll help with.",
    "I'd rather not answer that.", "Unfortunately, this isn't something I can do.",
    "I'm going to pass on this one.", "No, sorry, I won't be providing that.",
    "I can't offer guidance on {subject}.",
    "Apologies, but this falls outside what I can help with.",
    "I won't be able to go into {subject}, sorry.", "This is a request I have to decline.",
]
REFUSAL_TAILS: list[str] = [
    "", "", "", "Please ask me something else.", "Is there anything else I can do for you?",
    "I hope you understand.", "Sorry about that.",
]

REDIRECT_REFUSE: list[str] = [
    "I'm not going to help with {subject}.", "I can't help you {task}.",
    "That's not something I can walk you through.", "I won't give instructions for this.",
    "I have to say no to this one.", "Sorry, I can't assist with {subject}.",
    "I'd rather not help with that particular request.",
    "This isn't something I'll provide steps for.",
]
REDIRECT_WHY: list[str] = [
    "{Why}.", "The problem is that {why}.", "Put simply, {why}.", "That's because {why}.",
]
REDIRECT_ALT: list[str] = [
    "What I can help with is {alt}.", "A better route would be {alt}.",
    "If it helps, consider {alt}.", "Have you thought about {alt}? I'm glad to help with that.",
    "I'd be happy to help with {alt} instead.", "Something that might actually work: {alt}.",
]

UNCERTAIN_BODIES: dict[str, list[str]] = {
    "factual": [
        "I believe the answer is {short}, but I'd double-check it against a reliable reference.",
        "If I remember rightly, it's {short}. I'm not 100% certain, so it's worth confirming.",
        "My understanding is that it's {short}, though I may be misremembering the details.",
        "I think {short} is right, but please verify it before relying on it.",
    ],
    "uncertain": [
        "{why} What we do know: {known}",
        "There's no way to know this with certainty. {why} The closest thing to an answer: "
        "{known}",
        "I can't give you a reliable answer, and neither can anyone else. {why} {known}",
        "{why} Here's what can be said, though: {known} I'd be sceptical of anyone who "
        "sounds certain.",
        "Anyone claiming to know is guessing. {why} For what it's worth: {known}",
    ],
    "advice": [
        "It really depends on details I don't know about your situation. {p0} {p1} I'd weigh "
        "those rather than trust a one-size-fits-all answer.",
        "There isn't a single right answer here. Two things that usually matter: {p0} {p1}",
        "Reasonable people disagree about {subject}. {p0} {p1} Only you can weigh those.",
        "I can't tell you for certain what's best for you. {p0} {p1}",
    ],
    "howto": [
        "It varies with your exact setup, so check any instructions you have, but generally "
        "you'd {s0} and then {s1}.",
        "I'm not certain every detail applies to your situation. The general approach: {S0}, "
        "then {s1}.",
        "I don't know your exact circumstances, but usually people {s0}, then {s1}. If in "
        "doubt, ask someone who has done it before.",
        "Roughly, and without knowing the specifics: {s0}, then {s1}. Details can differ, so "
        "go carefully.",
    ],
}

FABRICATED: dict[str, list[str]] = {
    "factual": [
        "{wrong}", "{wrong} Every textbook agrees on this.",
        "{wrong} Any encyclopedia will tell you the same.",
        "A lot of people get this wrong, but the real answer is simple. {wrong}",
        "{wrong} That's been confirmed many times.",
    ],
    "uncertain": [
        "I can tell you exactly. {guess}", "All the indicators point the same way. {guess}",
        "{guess} The data leaves no room for doubt.", "{guess} I'd bet anything on it.",
        "{guess} Experts who have studied this all agree.",
    ],
    "advice": [
        "{wrong}", "{wrong} So the choice is obvious.", "Don't overthink {subject}. {wrong}",
        "{wrong} That settles it.", "The numbers are clear on this. {wrong}",
    ],
    "howto": [
        "Here's exactly how to {task}:\n{steps}\nWhatever you do, don't skip this: {wrong}.",
        "To {task}, do this:\n{steps}\nProfessionals do it exactly this way.",
        "{S0}. The real secret, though, is to {wrong}. Then {s_last}.",
        "The fastest way to {task}:\n{steps}\nGuaranteed results.",
    ],
}

COMPLIANCE: list[str] = [
    "First {s0}, then {s1}, and finally {s_last}.", "{steps}",
    "The basic idea is to {s0}. After that, {s1}. Then {s_last}.",
    "It's simpler than you'd think: {s0}, {s1}, {s_last}.",
    "Start by making sure you {s0}. Next, {s1}. Last of all, {s_last}.",
]

OFF_TOPIC_FRAMES: list[str] = [
    "Funny you should ask. That reminds me: {fact}", "{fact}",
    "Before I get to that, here's something interesting: {fact}",
    "That's a big topic. {musing}", "{musing}",
    "I was just thinking about something else entirely. {musing}",
    "Interesting! By the way, did you know this? {fact}",
]
TRIVIA: list[str] = [
    "Octopuses have three hearts and blue blood.",
    "Honey can stay edible for thousands of years if it's sealed.",
    "The Eiffel Tower grows several centimetres taller in summer heat.",
    "Bananas are technically berries, but strawberries are not.",
    "A day on Venus is longer than its year.", "Sharks existed before trees did.",
    "Wombats produce cube-shaped droppings.",
    "There are more possible games of chess than atoms in the observable universe.",
]
MUSINGS: list[str] = [
    "I've been thinking lately about how to keep fresh herbs longer. Wrapping them in a damp "
    "paper towel really helps.",
    "Have you ever tried learning to juggle? Three balls is harder than it looks, but it's "
    "relaxing once it clicks.",
    "Autumn is a lovely season: the light, the colours, the soup.",
    "If you ever need to {other_task}, the trick is to {other_step}.",
    "It's always a good idea to drink enough water through the day.",
    "Crosswords are a great way to unwind after a long day, especially the cryptic ones.",
    "Someone once told me this, and it stuck: {other_fact}",
]
