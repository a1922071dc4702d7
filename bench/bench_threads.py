"""Proxy training throughput on a shared CPU: the thread policy against torch's defaults, idle and under load.

Issue 27: with every core given to torch and OpenMP threads spinning at barriers, one other CPU-bound
process cut proxy training from ~6,000 to 56-212 samples/s.  This bench trains the demo rung's proxy
(ResNet-9 width 16 at 32 px, batch 256, random images) for a fixed number of epochs in a fresh process
per case, back to back:

* ``before``: torch imported first (OpenMP's default waits), all of the affinity's CPUs as threads;
* ``policy``: ``pruning_core`` imported first (``OMP_WAIT_POLICY=PASSIVE``) and the trainer's thread
  policy (threads for the CPUs other processes leave free, re-checked every epoch);

each with nothing else started (``idle``; other users of the machine still count, hence the load
printed) and with one competing CPU-bound process (a Python busy loop) the bench starts itself::

    python bench/bench_threads.py                 # prints a table: samples/s per case and ratio to idle
    python bench/bench_threads.py --epochs 4 --samples 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, sys, time
policy = sys.argv[1] == "policy"
wait_policy = os.environ.get("OMP_WAIT_POLICY", "(default)")
if policy:
    import pruning_core  # sets OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT before torch loads OpenMP
import numpy as np
import torch
from pruning_core.dynamics.trainer import proxy_trainer
if not policy:  # what the trainer did before: every CPU, threads fixed for the run
    from pruning_core.dynamics import trainer
    trainer.ThreadPolicy = lambda: None
n, epochs = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, size=n)
with proxy_trainer(x, y, device="cpu", seed=0, epochs=epochs + 1, num_classes=10, arch="resnet9", width=16,
                   batch_size=256, precision="auto") as t:
    t.train_epoch()  # warm-up: allocator, oneDNN kernel choice
    t0, trained = time.perf_counter(), t.samples_trained
    threads = []
    for _ in range(epochs):
        t.train_epoch()
        threads.append(torch.get_num_threads())
    seconds = time.perf_counter() - t0
if policy:
    wait_policy = os.environ["OMP_WAIT_POLICY"]  # set by pruning_core before torch loaded OpenMP
print(json.dumps({"rate": (t.samples_trained - trained) / seconds, "seconds": seconds, "threads": threads,
                  "wait_policy": wait_policy}))
"""

BUSY = "while True: pass"


def run_case(case: str, samples: int, epochs: int, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # torch's own default: one thread per CPU
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    out = subprocess.run([sys.executable, "-c", WORKER, case, str(samples), str(epochs)], env=env, check=True,
                         capture_output=True, text=True, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs; ResNet-9 width 16 at 32 px, batch 256, {args.samples:,} samples x {args.epochs} epochs")
    rows = []
    for load in ("idle", "1 busy process"):
        competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if load != "idle" else None
        try:
            if competitor is not None:
                time.sleep(2.0)  # let it take its core
            for case in ("before", "policy"):
                before = os.getloadavg()[0]
                try:
                    result = run_case(case, args.samples, args.epochs, args.timeout)
                except subprocess.TimeoutExpired:  # slower than the timeout allows: at most this rate
                    result = {"rate": args.samples * args.epochs / args.timeout, "seconds": args.timeout,
                              "threads": [0], "wait_policy": "(timed out: rate is an upper bound)"}
                rows.append({"load": load, "case": case, **result, "loadavg": f"{before:.1f}-{os.getloadavg()[0]:.1f}"})
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    idle = {row["case"]: row["rate"] for row in rows if row["load"] == "idle"}
    print(f"{'competing load':<16} {'case':<8} {'OMP_WAIT_POLICY':<16} {'threads':<10} {'samples/s':>10} "
          f"{'of idle':>8}  1-min load avg")
    for row in rows:
        threads = ",".join(str(t) for t in sorted(set(row["threads"])))
        print(f"{row['load']:<16} {row['case']:<8} {row['wait_policy']:<16} {threads:<10} {row['rate']:>10,.0f} "
              f"{row['rate'] / idle[row['case']]:>8.0%}  {row['loadavg']}")


if __name__ == "__main__":
    main()
