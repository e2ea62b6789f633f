#!/usr/bin/env bash
# Create or reuse .venv, install mclip with the test extra, lint and format-check (ruff), check
# types (mypy), run the whole test suite.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -m "not slow" -x). The tests run in one
# pytest-xdist worker per usable CPU (at most 4; each test file stays on one worker, so its module
# fixtures are built once); -n N, -p no:xdist, --pdb or --trace among the arguments run otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh test
echo "[lint] ruff check + ruff format --check (mclip tests scripts)" >&2
.venv/bin/ruff check mclip tests scripts
.venv/bin/ruff format --check --quiet mclip tests scripts || {
  echo "[lint] files above are not formatted: run .venv/bin/ruff format mclip tests scripts" >&2
  exit 1
}
echo "[types] mypy (mclip; strict on losses, evaluation metrics and config)" >&2
.venv/bin/mypy
parallel=(-n "$(.venv/bin/python -c 'from mclip.cpus import usable_cpus; print(min(4, usable_cpus()))')" --dist loadfile)
for arg in "$@"; do
  case "$arg" in -n | -n* | --numprocesses* | *no:xdist | --pdb | --trace) parallel=() ;; esac
done
exec .venv/bin/python -m pytest ${parallel[@]+"${parallel[@]}"} "$@"
