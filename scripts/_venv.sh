# Sourced by demo.sh and test.sh: create (or reuse) .venv and install mclip into it.
# Usage: source scripts/_venv.sh [EXTRA]   (EXTRA: optional pip extra, e.g. "test")
set -euo pipefail
PYTHON_BIN="${PYTHON:-python3}"
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "mclip needs Python >= 3.10; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON_BIN" --version)" >&2
  "$PYTHON_BIN" -m venv .venv
fi
spec="."
[ -n "${1:-}" ] && spec=".[${1}]"
echo "[setup] installing mclip ($spec) into .venv (first time: several minutes, ~6 GB with torch)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
export PATH="$PWD/.venv/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
