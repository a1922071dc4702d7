"""Time dataset loading / validation / decoding on real CIFAR-10 (50,000 JPEGs).

Usage: python bench/bench_datasets.py [UNPACKED_DIR]   (default /tmp/cifar)
Unpack first: tar -xzf ../shared/data/cifar10/cifar10-jpeg.tar.gz -C /tmp/cifar
Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.data.datasets import load_image_folder, load_manifest  # noqa: E402
from pruning_core.data.images import default_workers, load_image_array  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/cifar10/train_sym20.csv"
if not MANIFEST.exists():
    MANIFEST = Path("/work/shared/data/cifar10/train_sym20.csv")


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label:<58s} {time.perf_counter() - t0:7.2f} s")
    return out


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/cifar")
    if not MANIFEST.exists() or not (root / "train").is_dir():
        print(f"skip: need {MANIFEST} and an unpacked copy under {root}/train")
        return 0
    print(f"workers={default_workers()}  root={root}")
    ds = timed("load_manifest(train_sym20.csv, check_images=False)", lambda: load_manifest(MANIFEST, root, check_images=False))
    ds = timed("load_manifest(train_sym20.csv)  [stat + decode check]", lambda: load_manifest(MANIFEST, root))
    print(f"  -> {ds.report.summary()}  fingerprint {ds.fingerprint[:16]}")
    df = timed("load_image_folder(train)  [walk + stat + decode check]", lambda: load_image_folder(root / "train"))
    print(f"  -> {df.report.summary()}")
    arr, failed = timed(
        f"load_image_array({len(ds):,} files, size=32)", lambda: load_image_array(ds.abspaths(), size=32)
    )
    print(f"  -> {arr.shape} {arr.dtype}, {len(failed)} failed, {arr.nbytes / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
