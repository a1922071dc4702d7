"""Overview speed: the health summary, class quality, flip matrix and report of a 50,000-sample score table.

The table is synthetic but has every column the Overview reads (CLIP zero-shot and label alignment,
so the mislabel estimate's mixture and bootstrap run; outlier, caption, duplicate groups, cleanlab off), plus a decision for 5 % of the samples, so it times exactly what
the page computes on each rerun from cached scores.

    python bench/bench_overview.py --n 50000 --classes 10 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from pruning_core.clip_scores import SCORE_INFOS
from pruning_core.audit.overview import overview, report_json, report_markdown


def synthetic_table(n: int, classes: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A score table like the CLIP producer's, and a decision column with 5 % decided."""
    rng = np.random.default_rng(seed)
    names = np.array([f"class_{c}" for c in range(classes)])
    label = rng.integers(0, classes, n)
    flip = rng.random(n) < 0.1
    suggested = np.where(flip, rng.integers(0, classes, n), label)
    group = np.where(rng.random(n) < 0.02, rng.integers(0, n // 50, n), -1)
    frame = pd.DataFrame({
        "path": [f"images/{i:06d}.jpg" for i in range(n)], "label": names[label],
        "clip.suggested_label": names[suggested], "clip.zero_shot_margin": np.where(flip, rng.random(n), 0.0),
        "clip.label_alignment": np.where(flip, rng.normal(0.1, 0.15, n), rng.normal(0.45, 0.06, n)),
        "clip.outlier": rng.gamma(4.0, 0.05, n), "clip.caption_alignment": rng.normal(0.3, 0.05, n),
        "clip.duplicate_group": group,
    })
    decisions = pd.Series(np.where(rng.random(n) < 0.05, "keep", "undecided"), index=frame.index)
    return frame, decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frame, decisions = synthetic_table(args.n, args.classes)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        ov = overview(frame, SCORE_INFOS, decisions=decisions, skipped={"corrupt image": 3},
                      scoring={"clip": {"k": 10, "dup_threshold": 0.95}})
        report_json(ov), report_markdown(ov)
        times.append(time.perf_counter() - t)
    print(f"overview of {args.n:,} samples, {args.classes} classes: median {np.median(times):.3f} s, "
          f"max {max(times):.3f} s over {args.repeat} runs; findings "
          + ", ".join(f"{f.kind} {f.count:,}" for f in ov.findings))
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
