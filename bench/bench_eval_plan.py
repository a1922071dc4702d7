"""The Evaluate page's default plan for the demo, on a quiet machine and beside one CPU-bound process.

    python bench/bench_eval_plan.py

Issue 27: on a busy server the throughput probe once planned the demo's default grid at 73.7 min where an
idle machine plans 160 s.  Each case runs in a fresh process with an empty result store (so the probe
measures again), plans the default grid (``DEFAULT_STRATEGIES`` x ``DEFAULT_KEEPS``, ``EvalConfig()``,
the demo's held-out set) exactly as the page does, and prints the plan line, the planned seconds and the
planning's own wall time; the second case first starts a Python busy loop (killed afterwards).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import sys, time
started = time.perf_counter()
import pandas as pd
from cache.store import ResultStore
from pruning_core.demo.dataset import ensure_demo
from pruning_core.subset_training.evaluate import DEFAULT_KEEPS, DEFAULT_STRATEGIES, EvalConfig, plan_grid
demo = ensure_demo()
n_train, n_test = len(pd.read_csv(demo.manifest)), len(pd.read_csv(demo.test_manifest))
plan = plan_grid(EvalConfig(), strategies=DEFAULT_STRATEGIES, keeps=DEFAULT_KEEPS, n_samples=n_train, n_test=n_test,
                 num_classes=pd.read_csv(demo.manifest)["label"].nunique(), store=ResultStore(sys.argv[1]))
print(f"{plan.estimate_s:.1f}\t{time.perf_counter() - started:.1f}\t{plan.describe()}")
"""


def plan_once(busy: bool) -> str:
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(2.0 if busy else 0.0)
        with tempfile.TemporaryDirectory() as store:
            out = subprocess.run([sys.executable, "-c", WORKER, store], cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        return out.stdout.strip().splitlines()[-1]
    finally:
        if competitor is not None:
            competitor.kill()


def main() -> None:
    rows = []
    for busy in (False, True):
        before = os.getloadavg()[0]
        estimate, wall, line = plan_once(busy).split("\t")
        rows.append((busy, float(estimate), float(wall), line, before, os.getloadavg()[0]))
    idle = rows[0][1]
    for busy, estimate, wall, line, before, after in rows:
        print(f"{'1 busy process' if busy else 'nothing started'}: planned {estimate:.0f} s ({estimate / idle:.2f}x the "
              f"quiet plan), planning took {wall:.0f} s, load {before:.1f} -> {after:.1f}\n    {line}")


if __name__ == "__main__":
    main()
