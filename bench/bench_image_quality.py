"""CleanVision's image-quality step: its time on CIFAR-size images, and whether planted problems are flagged.

Two figures (docs/benchmarks.md, "Image quality")::

    python bench/bench_image_quality.py cifar --n 50000     # all CIFAR-10 training JPEGs (32 x 32)
    python bench/bench_image_quality.py planted --per 20    # a copy of the demo with planted images
    python bench/bench_image_quality.py blur --n 3000       # blur flags as is and blurred, per contrast floor

``cifar`` times ``image_quality.quality_scores`` (decode + CleanVision's seven issue types, one process)
over the first ``--n`` training files of ``/work/data/cifar10/train_clean.csv`` (``--cifar-root``) and
prints the load average before and after.  ``planted`` copies the demo's readable images into a
temporary image folder and adds ``--per`` planted images of each kind, made from random demo images:
darkened (x 0.15), blurred (Gaussian, radius 2), a 1 x 50 strip (the image squeezed) and a constant
image (its mean colour); it prints, per kind, how many its own issue type flags, and the share of
the demo's ordinary images each issue type flags.  ``blur`` takes ``--n`` random CIFAR-10 training
images and every readable demo image, as they are and Gaussian-blurred (radius 1 and 2), and prints the
share ``image.blurry`` flags at the default threshold for each contrast floor in ``--floors`` (the product's
is ``image_quality.BLUR_CONTRAST_FLOOR``), beside CleanVision's own blur score (threshold 0.29) on the
ring-free edge statistic.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.image_quality import ISSUE_TEXT, QualityConfig, flagged, quality_scores  # noqa: E402

PLANTS = {  # kind -> (its own issue type, how a demo image becomes one)
    "darkened": ("dark", lambda im: Image.fromarray((np.asarray(im) * 0.15).astype(np.uint8))),
    "blurred": ("blurry", lambda im: im.filter(ImageFilter.GaussianBlur(2))),
    "strip": ("odd_aspect_ratio", lambda im: im.resize((50, 1))),
    "constant": ("low_information", lambda im: Image.new("RGB", im.size, tuple(
        int(v) for v in np.asarray(im).reshape(-1, 3).mean(0)))),
}


def cifar(args: argparse.Namespace) -> None:
    manifest = pd.read_csv(Path(args.cifar_root) / "train_clean.csv").head(args.n)
    paths = [Path(args.cifar_root) / p for p in manifest["path"]]
    before = os.getloadavg()
    t0 = time.perf_counter()
    frame, _, _ = quality_scores(paths)
    seconds = time.perf_counter() - t0
    thresholds = QualityConfig().thresholds()
    counts = {issue: int(flagged(frame, issue, thresholds[issue]).sum()) for issue in ISSUE_TEXT}
    print(f"{len(paths):,} CIFAR-10 images: {seconds:.1f} s ({seconds / len(paths) * 1e3:.2f} ms an image), "
          f"load {before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("flagged:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))


def planted(args: argparse.Namespace) -> None:
    from pruning_core.demo.dataset import ensure_demo

    assets = ensure_demo()
    truth = pd.read_csv(assets.ground_truth)
    truth = truth[~truth["corrupted"]]
    manifest = pd.read_csv(assets.manifest).set_index("path")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, kinds = [], []
        for rel in truth["path"]:
            label = manifest.at[rel, "label"]
            (root / label).mkdir(exist_ok=True)
            dest = root / label / Path(rel).name
            shutil.copyfile(assets.root / rel, dest)
            paths.append(dest)
            kinds.append("ordinary")
        for kind, (_, make) in PLANTS.items():
            for i, rel in enumerate(rng.choice(truth["path"].to_numpy(), args.per, replace=False)):
                dest = root / manifest.at[rel, "label"] / f"planted_{kind}_{i:03d}.png"
                make(Image.open(assets.root / rel).convert("RGB")).save(dest)
                paths.append(dest)
                kinds.append(kind)
        t0 = time.perf_counter()
        frame, _, _ = quality_scores(paths)
        seconds = time.perf_counter() - t0
    kinds = np.asarray(kinds)
    thresholds = QualityConfig().thresholds()
    flags = {issue: flagged(frame, issue, thresholds[issue]) for issue in ISSUE_TEXT}
    print(f"demo copy: {int((kinds == 'ordinary').sum()):,} ordinary + {args.per} planted per kind, "
          f"{seconds:.1f} s, load {os.getloadavg()[0]:.1f}")
    for kind, (issue, _) in PLANTS.items():
        mine = kinds == kind
        print(f"  {kind:9s} flagged by {issue}: {int(flags[issue][mine].sum())} of {int(mine.sum())}")
    ordinary = kinds == "ordinary"
    print("  ordinary images flagged:", ", ".join(f"{issue} {flags[issue][ordinary].mean():.1%}" for issue in ISSUE_TEXT))


def blur(args: argparse.Namespace) -> None:
    from pruning_core.demo.dataset import ensure_demo
    from pruning_core.image_quality import blur_statistics, blurry_scores

    assets = ensure_demo()
    truth = pd.read_csv(assets.ground_truth)
    cifar = pd.read_csv(Path(args.cifar_root) / "train_clean.csv")  # sorted by class: a random sample of all ten
    sets = {"CIFAR-10": [Path(args.cifar_root) / p for p in cifar.sample(n=min(args.n, len(cifar)), random_state=0)["path"]],
            "demo": [assets.root / p for p in truth.loc[~truth["corrupted"], "path"]]}
    from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager

    threshold = QualityConfig().blurry
    theirs = ImagePropertyIssueManager().get_default_params()["blurry"]  # normalising factor and threshold
    print(f"image.blurry flagged at threshold {threshold} (load {os.getloadavg()[0]:.1f})")
    print(f"{'images':10s} {'blur':>6s} " + " ".join(f"{'floor ' + str(f):>9s}" for f in args.floors)
          + "  CleanVision's score")
    for name, paths in sets.items():
        for radius in (0, 1, 2):
            stats = []
            for path in paths:
                image = Image.open(path).convert("RGB")
                stats.append(blur_statistics(image.filter(ImageFilter.GaussianBlur(radius)) if radius else image))
            edge, contrast = np.array(stats).T
            shares = [float((blurry_scores(edge, contrast, floor) < threshold).mean()) for floor in args.floors]
            # CleanVision's squashing and threshold, without its colour term (which only rescues images): an upper bound
            cleanvision = float((1 - np.exp(-theirs["normalizing_factor"] * edge) < theirs["threshold"]).mean())
            print(f"{name:10s} {('r = ' + str(radius)) if radius else 'as is':>6s} "
                  + " ".join(f"{s:9.1%}" for s in shares) + f"  {cleanvision:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    c = sub.add_parser("cifar")
    c.add_argument("--n", type=int, default=50_000)
    c.add_argument("--cifar-root", default="/work/data/cifar10")
    c.set_defaults(func=cifar)
    p = sub.add_parser("planted")
    p.add_argument("--per", type=int, default=20)
    p.set_defaults(func=planted)
    b = sub.add_parser("blur")
    b.add_argument("--n", type=int, default=3000)
    b.add_argument("--floors", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    b.add_argument("--cifar-root", default="/work/data/cifar10")
    b.set_defaults(func=blur)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
