"""Write a class-dependent noise manifest for CIFAR-10 that no detector was tuned on (issue 22).

The shared manifests hold uniform noise (sym20, sym40) and one class-pair pattern (asym40: 40 % of five
classes flipped one way, e.g. truck -> automobile, five classes untouched).  ``confusable30`` is the kind
of noise people make and a different matrix: **every** class loses 30 % of its images to one or two
visually similar classes, some pairs both ways (cat <-> dog, automobile <-> truck), some split
(airplane -> bird or ship), so no class is a clean reference and the rates are not asym40's::

    python bench/make_noise_manifest.py            # writes $PRUNESCOPE_CIFAR_SHARED/../train_confusable30.csv

Deterministic (seeded), built from ``train_clean.csv`` (``path,label,true_label``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar_data import DATA  # noqa: E402

CONFUSABLE30: dict[str, dict[str, float]] = {
    "airplane": {"bird": 0.15, "ship": 0.15},
    "automobile": {"truck": 0.30},
    "bird": {"airplane": 0.15, "frog": 0.15},
    "cat": {"dog": 0.20, "frog": 0.10},
    "deer": {"horse": 0.20, "bird": 0.10},
    "dog": {"cat": 0.30},
    "frog": {"cat": 0.15, "bird": 0.15},
    "horse": {"deer": 0.30},
    "ship": {"airplane": 0.30},
    "truck": {"automobile": 0.30},
}
"""True class -> {noisy label: share of that class's images given it}."""


def confusable_noise(clean: pd.DataFrame, matrix: dict[str, dict[str, float]], seed: int) -> pd.DataFrame:
    """``clean`` with ``label`` replaced, per true class, by exactly the given shares of each confusion."""
    rng = np.random.default_rng(seed)
    out = clean.copy()
    for true, targets in matrix.items():
        rows = rng.permutation(np.flatnonzero(out["true_label"].to_numpy() == true))
        start = 0
        for noisy, share in targets.items():
            count = int(round(share * len(rows)))
            out.loc[out.index[rows[start:start + count]], "label"] = noisy
            start += count
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", type=Path, default=DATA / "train_clean.csv")
    ap.add_argument("--out", type=Path, default=None, help="default: train_confusable30.csv beside --clean")
    ap.add_argument("--seed", type=int, default=30)
    args = ap.parse_args()
    clean = pd.read_csv(args.clean)
    noisy = confusable_noise(clean, CONFUSABLE30, args.seed)
    out = args.out or args.clean.with_name("train_confusable30.csv")
    noisy.to_csv(out, index=False)
    rate = (noisy["label"] != noisy["true_label"]).mean()
    print(f"{out}: {len(noisy):,} samples, {rate:.1%} noisy")
    print(pd.crosstab(noisy["true_label"], noisy["label"]).to_string())


if __name__ == "__main__":
    main()
