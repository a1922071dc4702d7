"""Time each CLIP score and the CPS mask optimisation on random ViT-B-32-sized embeddings.

    python bench/bench_clip_scores.py --device cpu            # N=50,000, D=512, 10 classes
    python bench/bench_clip_scores.py --device cuda --n 200000

Random L2-normalised embeddings have the shapes and costs of real ones (the k-NN matmuls do not
care what the vectors mean).  Prints one row per stage: seconds and the peak RSS / GPU memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.clip_scores import (  # noqa: E402
    ClipAdapter,
    caption_alignment,
    clip_scores,
    cps_optimize,
    diversity_sds,
    knn,
    label_alignment,
    near_duplicate_groups,
    outlier_score,
    unit_rows,
    zero_shot,
)
from pruning_core.runtime.devices import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--cps-steps", type=int, default=300)
    ap.add_argument("--skip-full", action="store_true", help="skip the end-to-end clip_scores() row")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    img = unit_rows(rng.normal(size=(args.n, args.dim)))
    caps = unit_rows(rng.normal(size=(args.n, args.dim)))
    cls = unit_rows(rng.normal(size=(args.classes, args.dim)))
    labels = rng.integers(0, args.classes, args.n)
    names = [f"c{i}" for i in range(args.classes)]

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows: list[tuple[str, float]] = []

    def timed(name: str, fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        rows.append((name, time.perf_counter() - t))
        return out

    timed("warm-up (device init)", lambda: label_alignment(img[:1000], labels[:1000], cls, device=dev))
    sas = timed("label_alignment (SAS)", lambda: label_alignment(img, labels, cls, device=dev))
    timed("zero_shot (probs, margin, ...)", lambda: zero_shot(img, cls, labels, device=dev))
    timed("caption_alignment", lambda: caption_alignment(img, caps, device=dev))
    sds = timed(f"diversity_sds (same-class k={args.k})", lambda: diversity_sds(img, labels, args.k, device=dev))
    timed(f"outlier_score (all-pairs k={args.k})", lambda: outlier_score(img, args.k, device=dev))
    nb = timed("knn all-pairs k=32 (shared pass)", lambda: knn(img, img, 32, device=dev))
    timed("near_duplicate_groups (from k=32)", lambda: near_duplicate_groups(img, 0.95, neighbors=nb))
    timed("near_duplicate_groups (own pass)", lambda: near_duplicate_groups(img, 0.95, device=dev))
    timed("ClipAdapter.fit (linear, 5 epochs)", lambda: ClipAdapter(device=dev).fit(img, labels, cls, epochs=5))
    keep = args.n // 2
    res = timed(f"CPS mask ({args.cps_steps} steps, keep {keep})", lambda: cps_optimize(sas, sds, keep, steps=args.cps_steps, device=dev))
    assert res.mask.sum() == keep
    planted = np.where(np.arange(args.n) < args.n // 25, np.arange(args.n) // 4, -1)  # 4 % of rows, groups of 4
    res = timed(f"CPS mask + pair term ({args.n // 100:,} duplicate groups)",
                lambda: cps_optimize(sas, sds, keep, groups=planted, steps=args.cps_steps, device=dev))
    assert res.mask.sum() == keep
    if not args.skip_full:
        timed("clip_scores() end-to-end (+captions)",
              lambda: clip_scores(img, labels, names, cls, captions_emb=caps, k=args.k, dup_threshold=0.95, device=dev))

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu = f", peak GPU {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if dev.type == "cuda" else ""
    print(f"\nCLIP scores bench: N={args.n:,} D={args.dim} C={args.classes} device={dev} "
          f"torch threads={torch.get_num_threads()} (peak RSS {peak_rss:.2f} GiB{gpu})")
    print(f"{'stage':<42} {'seconds':>9}")
    print("-" * 52)
    for name, sec in rows:
        print(f"{name:<42} {sec:>9.2f}")


if __name__ == "__main__":
    main()
