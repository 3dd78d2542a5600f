#!/usr/bin/env bash
# tfq's one entry point: bootstraps its virtualenv, then runs a stage or the tests.
#   ./tfq.sh test [pytest args]       the test suite, on every core
#   ./tfq.sh lint                     ruff format --check and ruff check (what .ci/run runs first)
#   ./tfq.sh <stage> [flags]          python -m tfq.<stage>, e.g. ./tfq.sh train --dataset=mnist
# The virtualenv (.venv, or $TFQ_VENV) is made on first use from pyproject.toml and the pinned
# constraints.txt, and remade when either changes.
set -euo pipefail
cd "$(dirname "$0")"
venv="${TFQ_VENV:-.venv}"
python="${TFQ_PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
stamp="$venv/.tfq-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tfq: setting up $venv (once; a few minutes)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
if [ $# -eq 0 ]; then
  sed -n '2,5p' "$0" >&2
  exit 2
fi
stage="$1"; shift
if [ "$stage" = test ]; then
  exec "$venv/bin/python" -m pytest "$@"
fi
if [ "$stage" = lint ]; then
  "$venv/bin/ruff" format --check --quiet tfq tests benchmarks
  exec "$venv/bin/ruff" check --quiet tfq tests benchmarks "$@"
fi
exec "$venv/bin/python" -m "tfq.$stage" "$@"
