#!/usr/bin/env bash
# Set everything up (idempotent) and start the app on http://localhost:${MORM_PORT:-8501}.
# The demo workspace is built on first start. Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamlit run app.py --server.address "${MORM_ADDRESS:-localhost}" \
  --server.port "${MORM_PORT:-8501}" "$@"
