"""Benchmark the training-dynamics core: proxy training speed and label-noise detection quality.

CIFAR-10 with a noisy manifest (``label != true_label`` marks the noise)::

    python bench/bench_dynamics.py --manifest train_sym20.csv --epochs 16 --folds 4 --device auto
    python bench/bench_dynamics.py --limit 2500 --epochs 8 --width 8 --folds 0 --device cpu   # 2-core CPU

Prints data-loading time apart, the synchronised training time per run and epochs/s, then
AUROC / AP / F1 (top-k, k = #noisy) of every score (dynamics.* from one in-sample run,
cleanlab.* from k-fold out-of-sample probabilities).  ``--demo`` instead times the whole
dynamics step (decode + train + score) on the offline demo dataset's images
(``pruning_core.demo.dataset.write_demo_dataset``; ``--demo-dir`` reuses an existing one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_data import DATA, unpack  # noqa: E402

from pruning_core.runtime.devices import resolve_device  # noqa: E402
from pruning_core.dynamics import dynamics_scores, label_issue_scores, out_of_sample_probs, train_and_record  # noqa: E402
from pruning_core.dynamics.config import DynamicsConfig  # noqa: E402
from pruning_core.scoring.detection import evaluate_scores  # noqa: E402
from pruning_core.data.images import load_image_array  # noqa: E402

def load_cifar(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    root = unpack(Path(args.root))
    manifest = Path(args.manifest)
    if not manifest.is_absolute() and not manifest.exists():
        manifest = DATA / manifest
    df = pd.read_csv(manifest)
    if args.limit and args.limit < len(df):
        df = df.sample(n=args.limit, random_state=args.seed).sort_index()
    t0 = time.perf_counter()
    images, failed = load_image_array([root / p for p in df["path"]], args.image_size)
    print(f"decoded {len(df)} images in {time.perf_counter() - t0:.1f}s ({len(failed)} failed)")
    classes = sorted(df["label"].unique())
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    noisy = (df["label"] != df["true_label"]).to_numpy()
    return images, y, noisy, classes


def load_demo(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], float]:
    from pruning_core.demo.dataset import write_demo_dataset

    t0 = time.perf_counter()
    if args.demo_dir:
        root = Path(args.demo_dir)
        manifest = pd.read_csv(root / "demo.csv")
    else:
        root = Path(tempfile.mkdtemp(prefix="demo-bench-")) / "dataset"
        manifest, _ = write_demo_dataset(root)
        print(f"generated the demo dataset in {time.perf_counter() - t0:.1f}s (not counted)")
    t1 = time.perf_counter()
    images, failed = load_image_array([root / p for p in manifest["path"]], 32)
    t_decode = time.perf_counter() - t1
    ok = np.setdiff1d(np.arange(len(manifest)), list(failed))  # corrupted files are skipped, as the app does
    manifest, images = manifest.iloc[ok].reset_index(drop=True), images[ok]
    print(f"decoded {len(ok)} demo images in {t_decode:.1f}s ({len(failed)} corrupted skipped)")
    classes = sorted(manifest["label"].unique())
    y = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    noisy = (manifest["label"] != manifest["true_label"]).to_numpy()
    return images, y, noisy, classes, t_decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="train_sym20.csv")
    ap.add_argument("--root", default="/tmp/cifar", help="where the CIFAR tarball is (or gets) unpacked")
    ap.add_argument("--limit", type=int, default=0, help="random subset of this many images (0 = all)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--folds", type=int, default=4, help="cross-fitting folds for cleanlab (0 = skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="resnet9")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32, help="working resolution (CIFAR is 32 px)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--demo", action="store_true", help="time the dynamics step on the demo dataset")
    ap.add_argument("--demo-dir", default=None, help="an existing demo dataset folder (with demo.csv)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device: {name}")

    t_decode = 0.0
    if args.demo:
        images, y, noisy, classes, t_decode = load_demo(args)
    else:
        images, y, noisy, classes = load_cifar(args)
    print(f"N={len(y)} classes={len(classes)} noisy={noisy.mean():.1%} arch={args.arch} width={args.width} "
          f"epochs={args.epochs} batch={args.batch_size}")
    kw = dict(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
              label_smoothing=args.label_smoothing, device=device, precision=DynamicsConfig.precision)

    t0 = time.perf_counter()
    rec = train_and_record(images, y, seed=args.seed, **kw)
    frame, infos = dynamics_scores(rec, dynunc_window=DynamicsConfig.dynunc_window)
    t_run = time.perf_counter() - t0
    m = rec.meta
    print(f"in-sample run: train {m['train_seconds']:.2f}s ({args.epochs / m['train_seconds']:.2f} epochs/s, "
          f"{len(y) * args.epochs / m['train_seconds']:.0f} img/s), final evaluation {m['record_seconds']:.2f}s, "
          f"to-device {m['data_seconds']:.2f}s, train+record+score {t_run:.2f}s")
    print(f"final train accuracy on given labels: {rec.correct[-1].mean():.3f}")
    if args.demo:
        print(f"demo dynamics step (decode + train + record + score): {t_decode + t_run:.1f}s")

    if args.folds:
        t1 = time.perf_counter()
        probs = out_of_sample_probs(images, y, folds=args.folds, seed=args.seed, **kw)
        t_cf = time.perf_counter() - t1
        print(f"cross-fit {args.folds} folds: {t_cf:.2f}s ({t_cf / args.folds:.2f}s per fold incl. held-out prediction)")
        acc = (probs.argmax(1) == y)[~noisy].mean()
        print(f"out-of-sample accuracy on clean samples: {acc:.3f}")
        cl_frame, cl_infos = label_issue_scores(y, probs, classes)
        frame = pd.concat([frame, cl_frame], axis=1)
        infos = {**infos, **cl_infos}

    res = evaluate_scores(frame, infos, noisy)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(res[["score", "suspicious", "auroc", "average_precision", "precision", "recall", "f1", "n_flagged",
                   "flagged_by"]].to_string(index=False))


if __name__ == "__main__":
    main()
