#!/usr/bin/env bash
# Set up, build the offline demo (first run: about a minute) and open the app on it. Needs no terminal:
# `nohup bash scripts/start.sh --port P < /dev/null &` serves it headless (no prompt; usage statistics off).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/prunescope demo
.venv/bin/prunescope score demo --out "${PRUNESCOPE_CACHE:-$HOME/.cache/prunescope}/demo-scores.parquet"
# Listens on 127.0.0.1 only, as .streamlit/config.toml says (README: Security); --address/--allow-remote change it.
exec .venv/bin/prunescope app "$@"
