"""``--pred-probs`` on CIFAR-10's 50,000 training images: time end to end, and identity with cleanlab run directly.

Writes out-of-sample-like probabilities (50,000 x 10: the true class favoured, logits with noise, for the
sym20 manifest's noisy labels) to OUT/pred_probs.npy, times ``prunescope score MANIFEST --no-clip
--pred-probs`` as a subprocess (wall clock: Python start, loading and validating the manifest, cleanlab,
the issue-count bootstrap, the suggestions, writing the table), then the library call alone, and
checks that ``cleanlab.is_issue`` / ``cleanlab.label_quality`` equal ``cleanlab.filter.find_label_issues`` /
``cleanlab.rank.get_label_quality_scores`` on the same arrays.

    python bench/bench_pred_probs.py [--manifest /work/data/cifar10/train_sym20.csv] [--out /work/data/ownmodel]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pruning_core.audit.own_model import check_pred_probs, load_user_array
from pruning_core.data.datasets import load_dataset
from pruning_core.scoring.pipeline import pred_probs_score_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("/work/data/cifar10/train_sym20.csv"))
    parser.add_argument("--out", type=Path, default=Path("/work/data/ownmodel"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = pd.read_csv(args.manifest)
    classes = sorted(manifest["label"].unique())
    truth = pd.Categorical(manifest["true_label"], categories=classes).codes
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.0, (len(manifest), len(classes)))
    logits[np.arange(len(manifest)), truth] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs_path = args.out / "pred_probs.npy"
    np.save(probs_path, probs)

    command = [sys.executable, "-m", "pruning_core.cli", "--cache-dir", str(args.out / "cache"), "score",
               str(args.manifest), "--no-clip", "--pred-probs", str(probs_path), "--out",
               str(args.out / "scores.parquet"), "--overwrite"]
    for run in (1, 2):
        t0 = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"CLI end to end, run {run}: {time.perf_counter() - t0:.1f} s")

    dataset = load_dataset(args.manifest)
    t0 = time.perf_counter()
    given = check_pred_probs(load_user_array(str(probs_path), dataset.samples, "--pred-probs", dataset.classes),
                             len(dataset.classes))
    table = pred_probs_score_table(dataset, given)
    print(f"library (load + checks + cleanlab + bootstrap count): {time.perf_counter() - t0:.1f} s")

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = dataset.label_ids
    mask = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(y, probs)
    written = pd.read_parquet(args.out / "scores.parquet")
    same_mask = (written["cleanlab.is_issue"].to_numpy().astype(bool) == mask).all()
    same_quality = np.array_equal(written["cleanlab.label_quality"].to_numpy(), quality)
    print(f"identical to cleanlab on the same arrays: is_issue {same_mask}, label_quality {same_quality} "
          f"(max |diff| {np.abs(written['cleanlab.label_quality'].to_numpy() - quality).max():.2e}); "
          f"{int(mask.sum()):,} issues, {int((y != truth).sum()):,} labels truly wrong; "
          f"estimated count {table.settings['cleanlab']['estimated_issues']:,}")


if __name__ == "__main__":
    main()
