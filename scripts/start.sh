#!/usr/bin/env bash
# Set up, build the offline demo (first run: about a minute) and open the app on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/prunescope demo
.venv/bin/prunescope score demo --out "${PRUNESCOPE_CACHE:-$HOME/.cache/prunescope}/demo-scores.parquet"
exec .venv/bin/prunescope app "$@"
