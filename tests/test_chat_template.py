"""Chat templates rendered within limits: the same text as transformers' apply_chat_template
for real templates, and a prompt `MormError` for templates that loop, write or build without
end (each stopped long before it could take the machine's memory or time)."""

from __future__ import annotations

import time

import pytest

from morm_explorer import chat_template
from morm_explorer.chat_template import render_chat
from morm_explorer.errors import MormError
from tests.test_policy import TEMPLATE, _tokenizer

# SmolLM2-135M-Instruct's template, as its converted folder stores it
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\n' }}{% endif %}")
# namespace, loop, filters, tojson, special tokens, % and str.format, a {% generation %} block
RICH = ("{{ bos_token }}{% set ns = namespace(n=0) %}{% for m in messages %}"
        "{% set ns.n = ns.n + 1 %}{{ loop.index }}:{{ m['role']|upper }} "
        "{% generation %}{{ m['content']|trim|tojson }}{% endgeneration %}"
        "{% if not loop.last %}\n{% endif %}{% endfor %}{{ ns.n }}"
        "{% if add_generation_prompt %} {{ eos_token }}{% endif %}"
        "{{ '%05d' % 42 }}{{ '{:>4}'.format('x') }}")
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": " How do I boil an egg? \n"}]


@pytest.mark.parametrize("template", [TEMPLATE, SMOLLM2, RICH], ids=["tiny", "smollm2", "rich"])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_renders_as_transformers_does(template, add_generation_prompt):
    tok = _tokenizer(template)
    tok.bos_token = "<eos>"
    for messages in (MESSAGES, MESSAGES[1:]):
        expected = tok.apply_chat_template(messages, tokenize=False,
                                           add_generation_prompt=add_generation_prompt)
        assert render_chat(tok, messages, add_generation_prompt=add_generation_prompt) \
            == expected


HOSTILE = [  # (template, message fragment); the sizes are those that would exhaust a machine
    ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "wrote over 1,000,000"),
    ("{{ 'x' * 10000000000 }}", "builds a value of over 1,000,000"),
    ("{% set s = 'x' * 1000000 %}{{ ([s] * 100000)|join }}", "builds a value of over"),
    ("{% set s = 'x' * 100000 %}{% set b %}{% for i in range(100000) %}{{ s }}{% endfor %}"
     "{% endset %}{{ b|length }}", "builds a value of over"),
    ("{{ 'x'|center(10000000000) }}", "passes 1e+10 to a call"),
    ("{{ 'x'.ljust(10000000000) }}", "passes 1e+10 to a call"),
    ("{{ '%9999999999s' % 'x' }}", "formats with a width over"),
    ("{{ '{:>9999999999}'.format('x') }}", "formats with a width over"),
    ("{{ 2 ** 100000000 }}", "computes a number of over 65,536 bits"),
    ("{% for i in range(1000000) %}{% endfor %}", "Range too big"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
    ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
    ("{% for %}", "TemplateSyntaxError"),
]


@pytest.mark.parametrize("template,expect", HOSTILE, ids=[t for t, _ in HOSTILE])
def test_hostile_templates_stop_with_a_message(template, expect):
    tok = _tokenizer(template)
    t0 = time.monotonic()
    with pytest.raises(MormError, match="the chat template of ") as e:
        render_chat(tok, MESSAGES)
    assert expect in str(e.value)
    assert time.monotonic() - t0 < chat_template.MAX_SECONDS


@pytest.mark.parametrize("template", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set l = range(100000)|list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% for i in range(100000) %}{{ f(n + 1) if n < 3 }}{% endfor %}{% endmacro %}"
    "{{ f(0) }}",
], ids=["nested ranges", "nested lists", "recursive macro"])
def test_endless_loops_stop_at_the_time_limit(template, monkeypatch):
    monkeypatch.setattr(chat_template, "MAX_SECONDS", 0.3)
    tok = _tokenizer(template)
    t0 = time.monotonic()
    with pytest.raises(MormError, match="ran past its time limit of 0.3 s"):
        render_chat(tok, MESSAGES)
    assert time.monotonic() - t0 < 2


def test_the_time_limit_leaves_no_trace_function(monkeypatch):
    import sys

    monkeypatch.setattr(chat_template, "MAX_SECONDS", 0.1)
    before = sys.gettrace()
    with pytest.raises(MormError):
        render_chat(_tokenizer("{% for i in range(100000) %}{% for j in range(100000) %}"
                               "{% endfor %}{% endfor %}"), MESSAGES)
    render_chat(_tokenizer(TEMPLATE), MESSAGES)
    assert sys.gettrace() is before
