#!/usr/bin/env bash
# Create or reuse .venv, install mclip with the test extra, lint (ruff), run the whole test suite.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh test
echo "[lint] ruff check mclip tests scripts" >&2
.venv/bin/ruff check mclip tests scripts
exec .venv/bin/python -m pytest "$@"
