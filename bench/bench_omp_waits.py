"""How OpenMP's waiting threads cost the proxy on 2 threads, idle and beside one busy process.

Each case is a fresh process whose environment is set before torch loads OpenMP: ``default`` (nothing set:
libgomp spins ~300,000 times at a barrier, then sleeps), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``: sleeps at
once) and ``passive+spin`` (what ``pruning_core`` sets: passive, but libgomp spins ``GOMP_SPINCOUNT`` = 10,000
times first).  Each trains the 180-s plan's proxy (ResNet-9 width 16 at 24 px, batch 256, bf16, random images)
for 12 timed steps after 2 warm-up steps on exactly 2 threads (the thread policy off), and prints the median
step; ``busy`` runs a Python busy loop beside it::

    python bench/bench_omp_waits.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
         "passive+spin": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}}

WORKER = r"""
import sys, time
import numpy as np
import torch
from pruning_core.dynamics.trainer import proxy_trainer
bs, size, steps = 256, 24, 14
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (bs * steps, size, size, 3), dtype=np.uint8)
y = rng.integers(0, 10, bs * steps)
with proxy_trainer(x, y, device="cpu", seed=0, epochs=1, num_classes=10, arch="resnet9", width=16, batch_size=bs,
                   precision="bf16") as t:
    t.threads = None  # exactly 2 threads: the thread policy would take 1 beside a busy process
    torch.set_num_threads(2)
    times = []
    for batch in torch.arange(bs * steps).view(-1, bs):
        t0 = time.perf_counter()
        t.train_epoch(batch)
        times.append(time.perf_counter() - t0)
print(np.median(times[2:]) * 1000)
"""


def run_case(env_extra: dict, busy: bool) -> float:
    # torch must load OpenMP before pruning_core could set anything: the worker imports torch first
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, capture_output=True, text=True,
                             timeout=300).stdout
    finally:
        if competitor is not None:
            competitor.kill()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}")
    for load in ("idle", "busy"):
        for r in range(args.rounds):
            row = {name: run_case(extra, load == "busy") for name, extra in CASES.items()}
            print(f"{load:5s} round {r + 1}: " + "  ".join(f"{k} {v:6.1f} ms/step" for k, v in row.items()))
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
