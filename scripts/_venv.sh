# Sourced by demo.sh and test.sh: create (or reuse) .venv and install mclip into it.
# Usage: source scripts/_venv.sh [EXTRA]   (EXTRA: optional pip extra, e.g. "test")
set -euo pipefail
if [ ! -f pyproject.toml ] || [ ! -f scripts/_venv.sh ]; then
  # .venv and the install are relative to the working directory: elsewhere they would build a
  # 7 GB environment in the wrong place and then fail to find the project
  echo "scripts/_venv.sh: run from the repository root (cd to the folder with pyproject.toml)," \
    "not from $PWD" >&2
  return 1 2>/dev/null || exit 1
fi
PYTHON_BIN="${PYTHON:-python3}"
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "mclip needs Python >= 3.10; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON_BIN" --version)" >&2
  "$PYTHON_BIN" -m venv .venv
fi
if ! ls -d .venv/lib/python3*/site-packages/torch >/dev/null 2>&1; then
  free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt 9000000 ]; then
    echo "[setup] warning: only $((free_kb / 1000000)) GB free on $(df -P . | awk 'NR==2 {print $6}');" \
      "the first install needs about 8 GB (torch with its CUDA libraries): free some space first" >&2
  fi
fi
spec="."
[ -n "${1:-}" ] && spec=".[${1}]"
echo "[setup] installing mclip ($spec) into .venv (first time: several minutes, ~7 GB with torch)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
if ! ls -d .venv/lib/python3*/site-packages/torch >/dev/null 2>&1; then
  # torch and torchvision first, together (PyPI's matching pair): the resolver of the full install
  # below then keeps them instead of backtracking into old torch releases over unrelated conflicts
  .venv/bin/python -m pip install --quiet --disable-pip-version-check torch torchvision
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
export PATH="$PWD/.venv/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
