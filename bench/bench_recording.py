"""The recording run's two costs, training and its evaluation, for one or more checkouts side by side.

Each measurement is a fresh process that trains the budget plans' proxy (ResNet-9 width 16, batch 256) on random
uint8 images with ``train_and_record`` and prints its ``train_seconds`` and ``record_seconds`` (the evaluation of
every sample: after every epoch before 740bce6, after the last one since).  Checkouts alternate round by round, so a shared machine's load falls on all::

    git worktree add /tmp/old <commit>
    python bench/bench_recording.py --checkouts /tmp/old . --rounds 3     # 50,000 images at 24 px, 2 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkouts import run_in_checkout  # noqa: E402

ONE_RUN = """
import json, sys
import numpy as np
from pruning_core.dynamics.trainer import train_and_record
n, size, epochs = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
y = rng.integers(0, 10, n)
meta = train_and_record(x, y, epochs=epochs, seed=0, device="cpu", arch="resnet9", width=16, batch_size=256,
                        precision="auto").meta
print(json.dumps({"train": meta["train_seconds"], "record": meta["record_seconds"]}))
"""


def measure(checkout: Path, args: argparse.Namespace) -> dict:
    return run_in_checkout(checkout, ONE_RUN, args.n, args.size, args.epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkouts", nargs="+", type=Path, default=[Path(".")])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    print(f"{args.n:,} random images at {args.size} px, {args.epochs} epochs; load {os.getloadavg()[0]:.1f}")
    for r in range(args.rounds):
        for checkout in args.checkouts:
            m = measure(checkout, args)
            print(f"round {r + 1}  {str(checkout):20s} train {m['train']:5.1f} s  evaluation {m['record']:5.1f} s")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
