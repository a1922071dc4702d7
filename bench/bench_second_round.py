"""Research: does a second round, trained on the samples the first ranks cleanest, detect and relabel better?

Issue 21's fix-vs-drop gap at 10,000 sym40 images comes from two things: the cleanest 60 % still hold ~12 % wrong
labels, and the noise posterior's confident relabels are few (the in-sample proxy memorises).  This bench reads a
scored table (``dynamics.noise_score`` from the first round), trains a second proxy through the product's
``train_and_record`` on the cleanest ``--share`` and predicts out of sample:

* ``--folds 0``: one model on the cleanest share predicts the rest (how many of them it relabels, how right);
* ``--folds K``: for each of K folds, a model trained on the cleanest share of the other folds predicts the fold
  (every sample gets an out-of-sample second opinion; AUROC and the wrong share of the cleanest 5,000/6,000/7,000,
  alone and rank-averaged with the first round).

    python bench/bench_second_round.py /work/data/fixbench/scores-sym40-10k.parquet --folds 0
    python bench/bench_second_round.py /work/data/fixbench/scores-sym40-10k.parquet --folds 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_data import DATA, unpack  # noqa: E402

from pruning_core.data.images import load_image_array  # noqa: E402
from pruning_core.dynamics import train_and_record  # noqa: E402
from pruning_core.dynamics.crossfit import fold_assignment  # noqa: E402


def second_opinion(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, args: argparse.Namespace,
                   seed: int) -> np.ndarray:
    """Softmax on ``test`` of a proxy trained on ``train`` (the product's trainer and settings)."""
    rec = train_and_record(x[train], y[train], epochs=args.epochs, seed=seed, device="cpu", arch="resnet9",
                           width=args.width, batch_size=256, precision="auto", num_classes=int(y.max()) + 1,
                           record_idx=np.zeros(0, np.int64), eval_x=x[test])
    return rec.heldout_probs.astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", type=Path, help="a score table (parquet) of a CIFAR-10 manifest's sample")
    ap.add_argument("--manifest", default="train_sym40.csv")
    ap.add_argument("--share", type=float, default=0.6, help="the cleanest share the second round trains on")
    ap.add_argument("--folds", type=int, default=0)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--cifar-root", type=Path, default=Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar")))
    args = ap.parse_args()
    table = pd.read_parquet(args.scores)
    truth = pd.read_csv(DATA / args.manifest).set_index("path")
    classes = sorted(truth["true_label"].unique())
    ids = {c: i for i, c in enumerate(classes)}
    y = table["label"].map(ids).to_numpy()
    true = truth.loc[table["path"], "true_label"].map(ids).to_numpy()
    wrong = y != true
    root = unpack(args.cifar_root)
    x, _ = load_image_array([root / p for p in table["path"]], args.size)
    first = table["dynamics.noise_score"].to_numpy()
    rank = pd.Series(first).rank(pct=True).to_numpy()
    t0 = time.perf_counter()
    if args.folds == 0:
        kept, rest = np.flatnonzero(rank <= args.share), np.flatnonzero(rank > args.share)
        probs = second_opinion(x, y, kept, rest, args, seed=0)
        print(f"trained on {len(kept)} ({wrong[kept].mean():.3f} wrong) in {time.perf_counter() - t0:.0f} s; "
              f"predicts {len(rest)} ({wrong[rest].mean():.3f} wrong): accuracy {np.mean(probs.argmax(1) == true[rest]):.3f}")
        noise = np.full((len(classes), len(classes)), wrong.mean() / (len(classes) - 1))
        np.fill_diagonal(noise, 1 - wrong.mean())  # the true rate: the best case for a symmetric-noise posterior
        joint = probs * noise[:, y[rest]].T
        posterior = joint / joint.sum(1, keepdims=True)
        posterior[np.arange(len(rest)), y[rest]] = -1
        suggested, confidence = posterior.argmax(1), posterior.max(1)
        first_label = table["suggest.label"].iloc[rest].map(ids).to_numpy()
        first_conf = table["suggest.confidence"].iloc[rest].to_numpy()
        for t in (0.5, 0.7, 0.8, 0.9, 0.95):
            mine, theirs = confidence >= t, first_conf >= t
            print(f"relabels at >= {t}: second round {mine.sum():,} ({np.mean(suggested[mine] == true[rest][mine]):.3f} "
                  f"right), first round {theirs.sum():,} ({np.mean(first_label[theirs] == true[rest][theirs]):.3f} right)")
        return
    assign = fold_assignment(y, args.folds, 0)
    probs = np.zeros((len(y), len(classes)))
    for k in range(args.folds):
        others = np.flatnonzero(assign != k)
        train = others[rank[others] <= args.share]
        probs[assign == k] = second_opinion(x, y, train, np.flatnonzero(assign == k), args, seed=k)
        print(f"fold {k}: trained on {len(train)} ({wrong[train].mean():.3f} wrong), {time.perf_counter() - t0:.0f} s",
              flush=True)
    print(f"second-round accuracy (true labels, out of sample): {np.mean(probs.argmax(1) == true):.3f}")
    second = 1 - probs[np.arange(len(y)), y]
    ranks = {name: pd.Series(s).rank().to_numpy() for name, s in (("first", first), ("second", second))}
    for name, score in (("first round", first), ("second round", second), ("rank average", ranks["first"] + ranks["second"])):
        order = np.argsort(score, kind="stable")
        print(f"{name}: AUROC {roc_auc_score(wrong, score):.4f}; wrong in the cleanest 5,000 / 6,000 / 7,000: "
              + " / ".join(f"{wrong[order[:n]].mean():.4f}" for n in (5000, 6000, 7000)))


if __name__ == "__main__":
    main()
