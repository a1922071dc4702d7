"""The demo's Overview against its ground truth: each finding's estimate and interval beside its true precision.

Reads a score table of the built-in demo (``prunescope score demo --out TABLE``; the start command's
defaults: CLIP scores only) and the demo's ``ground_truth.csv``, computes the Overview and prints, per
finding, the flagged count, the estimated true problems with their 90 % interval, the true number
among the flagged, and whether the true precision lies inside the displayed interval.

    python bench/bench_demo_findings.py --table ~/.cache/prunescope/demo-scores.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pruning_core.audit.overview import overview
from pruning_core.demo.dataset import ensure_demo
from pruning_core.scoring.score_table import ScoreTable


def truth_masks(frame: pd.DataFrame, truth: pd.DataFrame) -> dict[str, np.ndarray]:
    """Which rows are true problems of each finding kind the demo's ground truth covers."""
    by_path = truth.set_index("path").reindex(frame["path"].astype(str))
    copies = by_path["duplicate_of"].dropna()
    return {"mislabelled": by_path["label_noisy"].fillna(False).to_numpy(bool),
            "caption mismatch": by_path["caption_mismatched"].fillna(False).to_numpy(bool),
            "duplicates": (by_path.index.isin(copies.index) | by_path.index.isin(copies.to_numpy()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", type=Path, required=True, help="score table of the demo (.parquet)")
    args = parser.parse_args()
    truth = pd.read_csv(ensure_demo().ground_truth)
    table = ScoreTable.load(args.table)
    frame = table.frame
    start = time.perf_counter()
    ov = overview(frame, table.infos, scoring=table.settings, skipped={})
    seconds = time.perf_counter() - start
    masks = truth_masks(frame, truth)
    for f in ov.findings:
        est = f.estimate.summary()
        row = {"finding": f.kind, "flagged": f.count, **{k: est[k] for k in
               ("estimated", "estimated_low", "estimated_high", "precision_low", "precision_high", "source")}}
        if f.kind in masks:
            hits = int(masks[f.kind][np.isin(frame.index, f.rows)].sum())
            precision = hits / f.count if f.count else float("nan")
            row.update(true_in_flagged=hits, true_total=int(masks[f.kind].sum()), true_precision=round(precision, 4),
                       inside=bool(est["precision_low"] <= precision <= est["precision_high"]) if f.count else None)
        print(json.dumps(row))
    print(json.dumps({"fitness": ov.fitness.verdict if ov.fitness else None, "overview_seconds": round(seconds, 2)}))
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
