#!/usr/bin/env bash
# Set up and run the whole test suite, the real-browser test included (installs Debian's chromium if missing)
# and the Label Studio round trip (installs label-studio into its own cached venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Label Studio in its own venv (cached outside the checkout) for tests/test_labelstudio_server.py
PRUNESCOPE_LABEL_STUDIO=$(bash scripts/setup_labelstudio.sh)
export PRUNESCOPE_LABEL_STUDIO
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q --durations=15 "$@"
