#!/usr/bin/env bash
# Create .venv (if needed) and install PruneScope with its pinned requirements (and the optional Ray extra,
# so the tests cover the Ray executor; a user's install can leave requirements-ray.txt out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-ray.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q -r requirements-ray.txt  # the optional Ray executor: CI tests it too
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
