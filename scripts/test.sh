#!/usr/bin/env bash
# Create or reuse .venv, install mclip with the test extra, run the whole test suite.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh test
exec .venv/bin/python -m pytest "$@"
