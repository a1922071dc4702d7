"""Train/test leakage on CIFAR-10: planted exact and near copies of training images in a copy of the test set.

Copies the CIFAR-10 test folder to OUT/test, plants 100 exact copies (the training file's bytes) and
100 near copies (each: cropped by 1-3 px per side, resized to 24-48 px, re-encoded as JPEG at quality
50-90) of distinct random training images, then runs ``audit.leakage`` (content hashes +
``nearest_by_pixels``: 8 px thumbnail k-NN, then the aligned 16 px correlation) and prints, per thumbnail size and threshold, the
share of planted copies found (with the right training image) and of the 10,000 original test images
flagged.  Data go to OUT (default /work/data/leakage), never the repository.

    python bench/bench_leakage.py [--cifar /work/data/cifar10] [--out /work/data/leakage] [--sizes 16]
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dataclasses import replace

from pruning_core.audit.leakage import EXACT, LeakageConfig, content_hashes, decode, leakage_pairs, nearest_by_pixels

PLANTED = 100
THRESHOLDS = (0.98, 0.985, 0.99, 0.995)


def near_copy(source: Path, rng: np.random.Generator) -> bytes:
    """``source`` cropped by 1-3 px per side, resized to 24-48 px and re-encoded at JPEG quality 50-90."""
    image = Image.open(source).convert("RGB")
    w, h = image.size
    left, top, right, bottom = rng.integers(1, 4, 4)
    image = image.crop((left, top, w - right, h - bottom)).resize((side := int(rng.integers(24, 49)),) * 2,
                                                                   Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(50, 91)))
    return out.getvalue()


def plant(cifar: Path, out: Path, seed: int = 0) -> tuple[list[Path], list[Path], dict[str, str]]:
    """Train paths, test paths (copy + planted) and planted test name -> its training source (relative ids)."""
    rng = np.random.default_rng(seed)
    train = sorted((cifar / "train").glob("*/*.jpg"))
    test_dir = out / "test"
    if test_dir.exists():
        shutil.rmtree(test_dir)
    shutil.copytree(cifar / "test", test_dir)
    sources = rng.choice(len(train), 2 * PLANTED, replace=False)
    planted = {}
    for i, index in enumerate(sources):
        src = train[index]
        target = test_dir / src.parent.name / f"planted_{'exact' if i < PLANTED else 'near'}_{i:03d}.jpg"
        target.write_bytes(src.read_bytes() if i < PLANTED else near_copy(src, rng))
        planted[str(target)] = str(src)
    return train, sorted(test_dir.glob("*/*.jpg")), planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, default=Path("/work/data/cifar10"))
    parser.add_argument("--out", type=Path, default=Path("/work/data/leakage"))
    parser.add_argument("--sizes", default=str(LeakageConfig.pixel_size), help="comma list of thumbnail sides")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, test, planted = plant(args.cifar, args.out)
    train_ids, test_ids = [str(p) for p in train], [str(p) for p in test]
    is_exact = np.array([t in planted and "planted_exact" in t for t in test_ids])
    is_near = np.array([t in planted and "planted_near" in t for t in test_ids])
    original = ~(is_exact | is_near)
    print(f"train {len(train):,}, test {len(test):,} ({is_exact.sum()} exact + {is_near.sum()} near planted)")
    t0 = time.perf_counter()
    train_hash, test_hash = content_hashes(train), content_hashes(test)
    print(f"content hashes: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    train_images, test_images = decode(train), decode(test)
    print(f"decoding: {time.perf_counter() - t0:.1f} s")
    for size in (int(s) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        nearest = nearest_by_pixels(train_images, test_images, replace(LeakageConfig(), pixel_size=size))
        t_near = time.perf_counter() - t0
        for threshold in THRESHOLDS:
            pairs = leakage_pairs(train_ids, test_ids, train_hash, test_hash, nearest, threshold=threshold)
            found = {(r.test_id, r.train_id): r.kind for r in pairs.itertuples()}
            exact_found = sum(found.get((t, planted[t])) == EXACT for t in np.array(test_ids)[is_exact])
            near_found = sum((t, planted[t]) in found for t in np.array(test_ids)[is_near])
            flagged = set(pairs["test_id"])
            false = sum(t in flagged for t in np.array(test_ids)[original])
            print(f"size {size:2d} threshold {threshold:.3f}: exact {exact_found}/{PLANTED}, near {near_found}/{PLANTED}, "
                  f"original test images flagged {false}/{original.sum():,} ({100 * false / original.sum():.2f} %); "
                  f"nearest_by_pixels {t_near:.1f} s")
        flagged = pairs.loc[pairs["test_id"].isin(np.array(test_ids)[original])].head(20)
        print(flagged.to_string())

if __name__ == "__main__":
    main()
