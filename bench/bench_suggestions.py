"""Benchmark: are suggested labels right as often as their calibrated probability says?

Reads a score table made with cross-fitting (``prunescope score ... --dynamics --folds 2``, optionally
with CLIP), recomputes the suggestions (``audit.suggest.with_suggestions``) and compares them with
the ground truth of a manifest that has ``true_label``::

    python bench/bench_suggestions.py --scores scores.parquet --truth train_sym40.csv --png docs/reliability.png

Prints, for the flagged samples (``cleanlab.is_issue``; all samples whose suggestion differs from the
given label with ``--flagged differs``), how many have a suggestion at or above each threshold and how
many of those are the true label (with the Jeffreys interval the app's estimates use), the expected
calibration error, and writes a reliability diagram (confidence bins vs. accuracy) as a PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.audit.estimates import precision_interval  # noqa: E402
from pruning_core.audit.suggest import (SUGGESTED_LABEL, SUGGESTION_CONFIDENCE, SUGGESTION_METHODS,  # noqa: E402
                                        with_suggestions)
from pruning_core.scoring.score_table import ScoreTable  # noqa: E402


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per confidence bin: samples, mean confidence, accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    rows = [{"lo": edges[b], "hi": edges[b + 1], "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()) if (which == b).any() else np.nan,
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else np.nan} for b in range(bins)]
    return pd.DataFrame(rows)


def draw(curves: dict[str, pd.DataFrame], path: Path, title: str, size: int = 480) -> None:
    """A reliability diagram with Pillow (no plotting library in the environment): accuracy per bin vs. confidence."""
    img = Image.new("RGB", (size, size + 60), "white")
    d = ImageDraw.Draw(img)
    pad = 50
    box = size - 2 * pad

    def xy(x: float, y: float) -> tuple[float, float]:
        return pad + x * box, pad + (1 - y) * box

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(160, 160, 160), width=1)
    for t in np.linspace(0, 1, 6):
        d.text((xy(t, 0)[0] - 8, xy(t, 0)[1] + 4), f"{t:.1f}", fill="black")
        d.text((4, xy(0, t)[1] - 6), f"{t:.1f}", fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44)]
    for (name, curve), colour in zip(curves.items(), colours):
        pts = [xy(c, a) for c, a in zip(curve["confidence"], curve["accuracy"]) if np.isfinite(c)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=3)
        for p in pts:
            d.ellipse([p[0] - 4, p[1] - 4, p[0] + 4, p[1] + 4], fill=colour)
    d.text((pad, 12), title, fill="black")
    d.text((pad, size - pad + 22), "calibrated confidence of the suggested label", fill="black")
    for i, (name, colour) in enumerate(zip(curves, colours)):
        d.text((pad, size + 10 + 16 * i), f"-- {name}: accuracy (suggestion == true label)", fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", required=True, help="score table with cleanlab.prob.* (and/or clip.zero_shot_prob.*)")
    ap.add_argument("--truth", required=True, help="CSV with path and true_label")
    ap.add_argument("--flagged", default="cleanlab.is_issue", help="flag column (1 = flagged), or 'differs'")
    ap.add_argument("--thresholds", default="0.5,0.7,0.8,0.9,0.95")
    ap.add_argument("--png", default=None, help="write the reliability diagram here")
    ap.add_argument("--title", default="suggested labels: reliability")
    ap.add_argument("--method", default="auto", choices=SUGGESTION_METHODS,
                    help="the product's choice (auto), or force the noise posterior or the product of experts")
    args = ap.parse_args()

    table = with_suggestions(ScoreTable.load(Path(args.scores)), args.method)
    frame = table.frame
    truth = pd.read_csv(args.truth).set_index("path")["true_label"].astype(str)
    true_label = frame["path"].map(truth)
    if true_label.isna().any():
        raise SystemExit(f"{args.truth}: {int(true_label.isna().sum())} scored paths have no true_label")
    print(f"{len(frame):,} samples, {(frame['label'] != true_label).mean():.1%} wrong labels; "
          f"suggestion settings {table.settings.get('suggest')}")
    confidence = frame[SUGGESTION_CONFIDENCE].to_numpy(dtype=np.float64)
    correct = (frame[SUGGESTED_LABEL].astype(str) == true_label).to_numpy()
    if args.flagged == "differs":
        flagged = (frame[SUGGESTED_LABEL].astype(str) != frame["label"].astype(str)).to_numpy()
    else:
        flagged = frame[args.flagged].to_numpy() == 1
    print(f"flagged ({args.flagged}): {int(flagged.sum()):,}")
    for t in (float(x) for x in args.thresholds.split(",")):
        sure = flagged & (confidence >= t)
        hits, n = int(correct[sure].sum()), int(sure.sum())
        lo, hi = precision_interval(hits, n) if n else (np.nan, np.nan)
        print(f"  confidence >= {t:.2f}: {n:,} flagged samples, {hits:,} suggestions are the true label "
              f"({hits / max(n, 1):.1%}, 95% interval {lo:.1%}-{hi:.1%})")
    curves = {"all samples": reliability(confidence, correct), "flagged": reliability(confidence[flagged], correct[flagged])}
    for name, curve in curves.items():
        ece = float(np.nansum(curve["n"] * (curve["confidence"] - curve["accuracy"]).abs()) / curve["n"].sum())
        print(f"{name}: expected calibration error {ece:.3f}")
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.png:
        draw(curves, Path(args.png), args.title)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
