"""Running one measurement in a given checkout of PruneScope: what the side-by-side benches share.

A bench that compares commits (``--checkouts /tmp/old .``) runs the same snippet of Python in a fresh process per
checkout, with that checkout first on the import path, and reads the JSON object the snippet prints last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_in_checkout(checkout: Path, code: str, *args: object) -> dict:
    """``python -c code args...`` in ``checkout`` (its ``pruning_core`` imported); the last line of stdout as JSON."""
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                         check=True, cwd=checkout)
    return json.loads(out.stdout.strip().splitlines()[-1])
