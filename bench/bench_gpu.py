"""The GPU check: run it the first time a GPU is lent; it prints every figure docs/benchmarks.md asks of one.

    python bench/bench_gpu.py                                   # any GPU: the full-size figures
    python bench/bench_gpu.py --device cpu --n 2000 --epochs 4 --width 16 --knn-rows 20000   # CPU smoke run

1. the device facts and the device policy's decisions (precision, where data lives, k-NN blocks, loader);
2. the 16-epoch CIFAR-10 proxy run (ResNet-9 width 64 at 32 px, batch 512; CIFAR-10 sym20 from
   ``bench/cifar_data.py`` when it is there, else synthetic images with 20% label noise), timed
   synchronised, data transfer apart;
3. the policy's precision against fp32 on the same data and seed: Spearman of AUM and AUROC of
   AUM against the injected noise for both;
4. the peak device memory of the run against the planner's estimate (``PROXY_PROBE.memory``);
5. all-pairs k-NN (k = 10) on 300K random 512-d unit rows at the policy's block size.

Targets (docs/benchmarks.md): 16-epoch CIFAR-10 <= 6 s on an H100-class GPU; AUM Spearman >= 0.95 and
|AUROC difference| <= 0.01 against fp32; peak memory within the estimate; k-NN at 300K rows in seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_data import DATA, unpack  # noqa: E402

from pruning_core.clip_scores.neighbors import knn  # noqa: E402
from pruning_core.runtime.devices import device_policy, resolve_device  # noqa: E402
from pruning_core.dynamics import dynamics_scores, train_and_record  # noqa: E402
from pruning_core.data.images import load_image_array  # noqa: E402
from pruning_core.dynamics.config import DynamicsConfig  # noqa: E402
from pruning_core.dynamics.probe import PROXY_PROBE  # noqa: E402


def cifar_or_synthetic(n: int, size: int, root: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(uint8 images, noisy labels, noise mask, what they are): CIFAR-10 sym20 if present, else synthetic."""
    manifest = DATA / "train_sym20.csv"
    if (DATA / "cifar10-jpeg.tar.gz").is_file() and manifest.is_file():
        df = pd.read_csv(manifest)
        if n < len(df):
            df = df.sample(n=n, random_state=seed).sort_index()
        cache = root / f"decoded-{len(df)}-{size}-{seed}.npy"
        if cache.is_file():
            images = np.load(cache)
        else:
            images, _ = load_image_array([unpack(root) / p for p in df["path"]], size)
            np.save(cache, images)
        classes = sorted(df["label"].unique())
        y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
        return images, y, (df["label"] != df["true_label"]).to_numpy(), f"CIFAR-10 sym20, {len(df):,} images"
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, n)
    palette = rng.integers(0, 256, (10, 3))
    images = np.clip(palette[y_true][:, None, None, :] + rng.normal(0, 60, (n, size, size, 3)), 0, 255).astype(np.uint8)
    noisy = rng.random(n) < 0.2
    y = np.where(noisy, (y_true + rng.integers(1, 10, n)) % 10, y_true)
    return images, y, noisy, f"synthetic (CIFAR-10 absent), {n:,} images"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=50_000, help="training images")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--knn-rows", type=int, default=300_000)
    ap.add_argument("--root", default="/tmp/cifar", help="where the CIFAR tarball is (or gets) unpacked")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dev = resolve_device(args.device)
    policy = device_policy(dev)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__} on {platform.node()}, load {load:.2f}, threads {torch.get_num_threads()}")
    print(f"facts: {policy.facts.describe()}")

    images, y, noisy, what = cifar_or_synthetic(args.n, args.image_size, Path(args.root), args.seed)
    config = DynamicsConfig(device=str(dev), epochs=args.epochs, width=args.width, image_size=args.image_size,
                            batch_size=args.batch_size)
    data_bytes, working_bytes = PROXY_PROBE.memory(config, len(y), num_classes=10)
    print(f"data: {what}")
    print(f"policy: {policy.describe(data_bytes, working_bytes)}")

    kw = dict(device=dev, arch="resnet9", epochs=args.epochs, width=args.width, batch_size=args.batch_size,
              num_classes=10, seed=args.seed)
    aum, results = {}, []
    for precision in dict.fromkeys((policy.precision, "fp32")):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        sync(dev)
        t0 = time.perf_counter()
        record = train_and_record(images, y, precision=precision, **kw)
        sync(dev)
        wall = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
        aum[precision] = dynamics_scores(record, dynunc_window=config.dynunc_window)[0]["dynamics.aum"].to_numpy()
        results.append({"precision": precision, "wall_s": wall, "train_s": record.meta["train_seconds"],
                        "record_s": record.meta["record_seconds"], "data_s": record.meta["data_seconds"],
                        "data_on_device": record.meta["data_on_device"],
                        "peak_MiB": None if peak is None else peak / 2**20,
                        "estimate_MiB": (data_bytes + working_bytes) / 2**20,
                        "aum_auroc": roc_auc_score(noisy, -aum[precision])})
    print(f"{args.epochs}-epoch proxy runs (ResNet-9 width {args.width} at {args.image_size} px, batch {args.batch_size}):")
    print(pd.DataFrame(results).set_index("precision").to_string(float_format=lambda v: f"{v:.3f}"))
    if policy.precision != "fp32":
        rho = spearmanr(aum[policy.precision], aum["fp32"]).statistic
        print(f"{policy.precision} vs fp32: AUM Spearman {rho:.4f}, AUROC difference "
              f"{results[0]['aum_auroc'] - results[1]['aum_auroc']:+.4f}")
    else:
        print("the policy's precision is fp32 here: no reduced-precision comparison")

    rng = np.random.default_rng(args.seed)
    emb = rng.standard_normal((args.knn_rows, 512), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    knn(emb[:1000], emb[:1000], 10, device=dev)  # warm-up: kernels, allocator
    sync(dev)
    t0 = time.perf_counter()
    knn(emb, emb, 10, device=dev, block_bytes=policy.knn_block_bytes)
    sync(dev)
    print(f"all-pairs k-NN, k=10, {args.knn_rows:,} x 512 rows, {policy.knn_block_bytes // 2**20:,} MiB blocks: "
          f"{time.perf_counter() - t0:.2f} s")
    print(f"load at end {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")


if __name__ == "__main__":
    main()
