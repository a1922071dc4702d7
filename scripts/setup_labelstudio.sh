#!/usr/bin/env bash
# Install Label Studio (requirements-labelstudio.txt) into its own virtual environment, outside the checkout so
# it is reused between runs (CI clones afresh; the install takes ~2.5 min on the 2-core VM).  Prints the path of
# its label-studio executable.  PRUNESCOPE_LABEL_STUDIO_VENV overrides where the venv lives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=${PRUNESCOPE_LABEL_STUDIO_VENV:-$HOME/.cache/prunescope-venvs/labelstudio}
stamp="$venv/.requirements.sha"
want=$(sha256sum requirements-labelstudio.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/label-studio" ]; then
  start=$(date +%s)
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r requirements-labelstudio.txt >&2
  echo "$want" > "$stamp"
  echo "installed Label Studio into $venv in $(( $(date +%s) - start )) s" >&2
fi
echo "$venv/bin/label-studio"
