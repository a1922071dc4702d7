"""A dataset's first load and first decode (what a first scoring run pays before training), for one or more
checkouts side by side.

Each measurement is a fresh process with an empty result store: ``load_dataset`` checks every file (no validation
ledger yet), then ``decoded_images`` decodes all of them at ``--size``.  Checkouts alternate round by round, so a
shared machine's load falls on all.  Before decoding, each prints the planner's estimate of the decoding
(``scoring.pipeline.decoding_seconds``, which the budget reserves)::

    git worktree add /tmp/old <commit>
    python bench/bench_first_load.py --checkouts /tmp/old . --rounds 3     # 50,000 CIFAR-10 JPEGs at 24 px
    python bench/bench_first_load.py --checkouts /tmp/old . --cold         # the files dropped from the page cache first

``--cold`` drops the kernel's page cache before every measurement (root only: ``/proc/sys/vm/drop_caches``), so
each load reads its files from the disk, as a user's first run on a dataset usually does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkouts import run_in_checkout  # noqa: E402
from cifar_data import DATA, unpack  # noqa: E402

ONE_RUN = """
import json, sys, tempfile, time
from cache.store import ResultStore
from pruning_core.data.datasets import decoded_images, load_dataset
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.scoring.pipeline import decoding_seconds
manifest, root, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ResultStore(tempfile.mkdtemp())
t0 = time.perf_counter()
dataset = load_dataset(manifest, root)
t1 = time.perf_counter()
estimate = decoding_seconds(dataset, store)(DynamicsConfig(image_size=size))
t2 = time.perf_counter()
decoded_images(dataset, size, store)
t3 = time.perf_counter()
print(json.dumps({"check": t1 - t0, "estimate": estimate, "decode": t3 - t2, "n": len(dataset)}))
"""


def drop_page_cache() -> None:
    """Every file's cached pages dropped (root only)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs root to write /proc/sys/vm/drop_caches ({exc.strerror or exc})") from None


def measure(checkout: Path, manifest: Path, root: Path, size: int, cold: bool) -> dict:
    if cold:
        drop_page_cache()
    return run_in_checkout(checkout, ONE_RUN, manifest, root, size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkouts", nargs="+", type=Path, default=[Path(".")])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--manifest", default="train_sym40.csv", help="a CIFAR-10 manifest (bench/cifar_data.py)")
    ap.add_argument("--cifar-root", type=Path, default=Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar")))
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every measurement (root)")
    args = ap.parse_args()
    root = unpack(args.cifar_root)
    print(f"{args.manifest} at {args.size} px, {'cold' if args.cold else 'warm'} page cache; load {os.getloadavg()[0]:.1f}")
    for r in range(args.rounds):
        for checkout in args.checkouts:
            m = measure(checkout, DATA / args.manifest, root, args.size, args.cold)
            print(f"round {r + 1}  {str(checkout):20s} {m['n']:,} files: check {m['check']:5.1f} s  "
                  f"decode {m['decode']:5.1f} s (the planner's estimate {m['estimate']:5.1f} s)  "
                  f"together {m['check'] + m['decode']:5.1f} s")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
