"""The parts of a composite reward (`reward.composite`) that are not models: rule rewards and
Python reward functions. Each turns N (prompt, response) texts into scores (N,), NaN where a
function answers None (not applicable, as TRL reads it).

Rules (``rule:NAME`` or ``rule:NAME=ARGUMENT``), all on the response:

- ``length``: its length in whitespace-separated tokens (``str.split``; no tokenizer, so the
  count is the same whichever models the composite holds);
- ``refusal``: 1 when it contains a refusal phrase (`data.features.REFUSAL`), else 0;
- ``regex=PATTERN``: 1 when PATTERN matches anywhere in it, else 0. Python's ``re`` cannot stop
  a search that backtracks for ever, so patterns run on the ``regex`` package (installed with
  transformers), which can: a pattern over `MAX_PATTERN` characters is refused, and a search
  past `REGEX_SECONDS` ends in an error naming the part;
- ``format=json``: 1 when it parses as JSON (stripped, or inside one ```json fence), else 0.

Python reward functions (``py:FILE:FUNCTION``) have TRL's signature
``f(prompts, completions, **kwargs) -> list[float | None]`` and are called with keywords, on
batches, with plain strings. They run in a child Python process (``python -I``, the file's
folder first on its path), fed the texts as JSON on stdin, so a function that hangs is killed:
past ``time_limit`` seconds per batch the child is stopped and the error names the part. A
function that raises, returns a list of the wrong length, a value that is not a number or None,
or NaN or infinity, is an error naming the part too.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from morm_explorer.errors import MormError

RULES = ("length", "refusal", "regex", "format")
FORMATS = ("json",)
MAX_PATTERN = 500  # characters of a regex part's pattern
REGEX_SECONDS = 1.0  # per response
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)


def check_rule(rule: str, argument: str, part: str) -> None:
    """Refuse a rule that does not exist or an argument it cannot take."""
    if rule not in RULES:
        raise MormError(f"part {part!r}: unknown rule {rule!r}; rules are "
                        "rule:length, rule:refusal, rule:regex=PATTERN, rule:format=json",
                        field="part")
    if rule in ("length", "refusal") and argument:
        raise MormError(f"part {part!r}: rule:{rule} takes no argument", field="part")
    if rule == "format" and argument not in FORMATS:
        raise MormError(f"part {part!r}: rule:format needs one of {', '.join(FORMATS)}, got "
                        f"{argument!r}", field="part")
    if rule == "regex":
        import regex

        if not argument or len(argument) > MAX_PATTERN:
            raise MormError(f"part {part!r}: rule:regex needs a pattern of 1 to {MAX_PATTERN} "
                            "characters", field="part")
        try:
            regex.compile(argument)
        except regex.error as e:
            raise MormError(f"part {part!r}: invalid pattern {argument!r}: {e}",
                            field="part") from e


def _is_json(text: str) -> bool:
    text = text.strip()
    fenced = _FENCE.match(text)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:  # JSONDecodeError, and numbers too long to convert
        return False
    return True


def rule_scores(rule: str, argument: str, responses: list[str], part: str) -> np.ndarray:
    """A rule's scores (N,) of ``responses`` (see the module docstring)."""
    if rule == "length":
        return np.array([len(r.split()) for r in responses], dtype=np.float32)
    if rule == "refusal":
        from morm_explorer.data.features import REFUSAL

        return np.array([bool(REFUSAL.search(r)) for r in responses], dtype=np.float32)
    if rule == "format":
        return np.array([_is_json(r) for r in responses], dtype=np.float32)
    import regex

    pattern = regex.compile(argument)
    out = np.zeros(len(responses), dtype=np.float32)
    for i, r in enumerate(responses):
        try:
            out[i] = pattern.search(r, timeout=REGEX_SECONDS) is not None
        except TimeoutError as e:
            raise MormError(f"part {part!r}: the pattern ran past its time limit of "
                            f"{REGEX_SECONDS:g} s on response {i}: simplify it (nested "
                            "repeats such as (a+)+ backtrack without end)", field="part") from e
    return out


# The child process: loads the function, calls it batch by batch, checks every value, and
# writes {"values": [...]} or {"error": "..."} as JSON to what was stdout (the function's own
# prints go to stderr).
_CHILD = r"""
import importlib.util, json, math, numbers, sys
out, sys.stdout = sys.stdout, sys.stderr
job = json.loads(sys.stdin.buffer.read())
def done(result):
    out.write(json.dumps(result))
    out.flush()
    raise SystemExit(0)
try:
    sys.path.insert(0, job["folder"])
    spec = importlib.util.spec_from_file_location("morm_reward_part", job["file"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    f = getattr(module, job["function"])
except Exception as e:
    done({"error": f"cannot load {job['function']} from {job['file']}: {type(e).__name__}: {e}"})
if not callable(f):
    done({"error": f"{job['function']} in {job['file']} is not a function"})
prompts, completions, bs, values = job["prompts"], job["completions"], job["batch_size"], []
for start in range(0, len(prompts), bs):
    p, c = prompts[start:start + bs], completions[start:start + bs]
    try:
        got = f(prompts=p, completions=c)
    except Exception as e:
        done({"error": f"raised {type(e).__name__}: {e}"})
    if not isinstance(got, (list, tuple)):
        done({"error": f"returned {type(got).__name__}, not a list of numbers"})
    if len(got) != len(p):
        done({"error": f"returned {len(got)} values for a batch of {len(p)} completions"})
    for i, v in enumerate(got):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            done({"error": f"returned {type(v).__name__} {str(v)[:40]!r} for completion "
                           f"{start + i}: expected a number, or None for not applicable"})
        if v is not None and not math.isfinite(float(v)):
            done({"error": f"returned {float(v)} for completion {start + i}: expected a "
                           "finite number, or None for not applicable"})
        values.append(None if v is None else float(v))
done({"values": values})
"""


def run_function(file: str, function: str, prompts: list[str], responses: list[str], *,
                 part: str, batch_size: int = 64, time_limit: float = 60.0) -> np.ndarray:
    """Scores (N,) from the reward function ``function`` of ``file`` (NaN for None), run in a
    child process stopped after ``time_limit`` seconds per batch of ``batch_size``."""
    if not prompts:
        return np.zeros(0, dtype=np.float32)
    n_batches = math.ceil(len(prompts) / batch_size)
    job = {"file": file, "folder": str(Path(file).parent), "function": function,
           "prompts": list(prompts), "completions": list(responses), "batch_size": batch_size}
    what = f"part {part!r} ({Path(file).name}:{function})"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _CHILD], input=json.dumps(job).encode(),
                              capture_output=True, timeout=time_limit * n_batches + 1.0)
    except subprocess.TimeoutExpired as e:
        raise MormError(f"{what} ran past its time limit of {time_limit:g} s per batch of "
                        f"{batch_size} completions and was stopped", field="part") from e
    try:
        result = json.loads(done.stdout)
    except ValueError:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise MormError(f"{what} ended without a result (exit code {done.returncode}): "
                        f"{tail[0][:300]}", field="part") from None
    if not isinstance(result, dict) or "values" not in result:
        error = result.get("error") if isinstance(result, dict) else None
        raise MormError(f"{what} {str(error)[:500]}", field="part")
    return np.array([np.nan if v is None else v for v in result["values"]], dtype=np.float32)
