"""A tokenizer's chat template rendered within limits of time and size.

A chat template is code that ships with a model: Jinja, which transformers runs in a sandbox.
The sandbox blocks escapes, not waste: its ``range`` stops at 100,000 items, but two nested
loops, ``'x' * 10**10`` or a loop that writes 100 KB a turn run until the machine gives out.
`render_chat` renders a template as ``tokenizer.apply_chat_template(..., tokenize=False)``
does, with transformers' own filters, globals and extensions, in a sandbox that also

- stops after `MAX_SECONDS` of wall-clock time: a trace function on this thread looks at the
  clock at every line the compiled template runs and at every Python call it makes;
- refuses ``*``, ``+`` and ``**`` whose result would hold over `MAX_CHARS` characters (or
  list items), or an integer of over `MAX_BITS` bits, and integer arguments over `MAX_CHARS`
  to a call, a filter or a format (``"x".center(10**10)``, ``"%9999999999s"``);
- stops writing at `MAX_CHARS` characters of output, counted as the template writes them.

Whatever goes wrong inside a template becomes a `MormError` naming the tokenizer.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from morm_explorer.errors import MormError

MAX_SECONDS = 2.0  # a real template renders in about a millisecond
MAX_CHARS = 1_000_000  # characters (or list items) of the output and of any value built
MAX_BITS = 1 << 16  # bits of an integer the template computes
_TEMPLATE_FILE = "<template>"  # the file name of Jinja's code compiled from a string
_WIDTH = re.compile(r"\d+")


class _LimitReached(Exception):
    """A limit of `render_chat` was reached; the message says which."""


def _size(x: Any, depth: int = 0) -> int:
    """Characters and items a value holds, nested containers included (8 levels deep)."""
    if isinstance(x, str | bytes):
        return len(x)
    if isinstance(x, dict) and depth < 8:
        return len(x) + sum(_size(k, depth + 1) + _size(v, depth + 1) for k, v in x.items())
    if isinstance(x, list | tuple) and depth < 8:
        return len(x) + sum(_size(v, depth + 1) for v in x)
    return 1


def _check_args(args: tuple, kwargs: dict) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and abs(a) > MAX_CHARS:
            raise _LimitReached(f"passes {a:.3g} to a call; the limit is {MAX_CHARS:,}")


def _check_format(fmt: Any) -> None:
    """Widths and precisions in a %- or {}-format string stay under MAX_CHARS."""
    if isinstance(fmt, str) and any(int(w) > MAX_CHARS for w in _WIDTH.findall(fmt)):
        raise _LimitReached(f"formats with a width over {MAX_CHARS:,} (the limit)")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*" and ints:
        bits = abs(left).bit_length() + abs(right).bit_length()
    elif operator == "**" and ints:
        bits = abs(left).bit_length() * max(right, 0)
    else:
        bits = 0
    if bits > MAX_BITS:
        raise _LimitReached(f"computes a number of over {MAX_BITS:,} bits (the limit)")
    if operator == "*" and isinstance(left, int) != isinstance(right, int):
        seq, n = (right, left) if isinstance(left, int) else (left, right)
        size = _size(seq) * max(n, 0)
    elif operator == "+" and not isinstance(left, int | float):
        size = _size(left) + _size(right)
    else:
        size = 0
    if size > MAX_CHARS:
        raise _LimitReached(f"builds a value of over {MAX_CHARS:,} characters (the limit)")
    if operator == "%":
        _check_format(left)
        _check_args(right if isinstance(right, tuple) else (right,), {})


def _bounded_filter(name: str, f: Callable) -> Callable:
    @functools.wraps(f)  # keeps jinja's pass_context / pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        if name == "format" and args:
            _check_format(args[0])
        return f(*args, **kwargs)
    return bounded


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the size checks above on operators, calls, format strings and the
    joining of written text."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def call_binop(self, context, operator, left, right):
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):
        _check_args(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)  # a str's format method, or None
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped

    @staticmethod
    def concat(parts) -> str:
        """Joins what a block, a macro or a ``{% set %}`` block wrote: many references to one
        long string cost little until they are joined."""
        parts = list(parts)
        if sum(map(len, parts)) > MAX_CHARS:
            raise _LimitReached(f"builds a value of over {MAX_CHARS:,} characters (the limit)")
        return "".join(parts)


@functools.cache
def _environment() -> _BoundedEnvironment:
    """transformers' chat-template sandbox (its options, extensions, filters and globals:
    tojson, raise_exception, namespace, ...) rebuilt as a `_BoundedEnvironment`."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    base = _compile_jinja_template("").environment
    env = _BoundedEnvironment(trim_blocks=base.trim_blocks, lstrip_blocks=base.lstrip_blocks,
                              keep_trailing_newline=base.keep_trailing_newline,
                              extensions=[type(e) for e in base.extensions.values()])
    env.filters.update({k: _bounded_filter(k, f) for k, f in base.filters.items()})
    env.globals.update(base.globals)  # range stays the sandbox's, capped at 100,000 items
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str):
    return _environment().from_string(source)


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise `_LimitReached` in this thread's Python code once ``seconds`` have passed: at
    every call, and at every line of compiled templates (their loops call nothing)."""
    end = time.monotonic() + seconds

    def check(frame, event, arg):
        if time.monotonic() > end:
            raise _LimitReached(f"ran past its time limit of {seconds:g} s")
        return check if frame.f_code.co_filename == _TEMPLATE_FILE else None

    previous = sys.gettrace()
    sys.settrace(check)
    try:
        yield
    finally:
        sys.settrace(previous)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *,
                add_generation_prompt: bool = False) -> str:
    """The text of ``messages`` under the chat template of ``tokenizer``: the same string as
    ``tokenizer.apply_chat_template(messages, tokenize=False, ...)``, within the limits of
    this module; `MormError` naming the tokenizer and the limit or the error otherwise."""
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    source = tokenizer.get_chat_template()
    # the variables transformers gives a template; messages are plain dicts of strings
    variables = {**tokenizer.special_tokens_map, "messages": [dict(m) for m in messages],
                 "tools": None, "documents": None, "add_generation_prompt": add_generation_prompt}
    parts: list[str] = []
    written = 0
    try:
        with _time_limit(MAX_SECONDS):
            for chunk in _compile(source).generate(**variables):
                written += len(chunk)
                if written > MAX_CHARS:
                    raise _LimitReached(f"wrote over {MAX_CHARS:,} characters (the limit)")
                parts.append(chunk)
    except _LimitReached as e:
        raise MormError(f"the chat template of {name} {e}") from None
    except Exception as e:  # anything a template raises is the template's fault
        raise MormError(f"the chat template of {name} failed: {type(e).__name__}: {e}") from e
    return "".join(parts)
