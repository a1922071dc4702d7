"""How well does a score find known-bad samples?  Detection metrics against ground truth.

Used by the benchmarks (CIFAR-10 with injected label noise: ``label != true_label``) and by the
demo dataset, whose injected noise is known.  A score is oriented by its ``ScoreInfo.suspicious``
direction so that "more suspicious" always ranks first.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from pruning_core.scoring.score_info import ScoreInfo

Flagged = Union[None, float, np.ndarray]


def _suspicion(scores: Any, suspicious: str) -> np.ndarray:
    """Scores turned so that higher = more suspicious; NaN becomes the least suspicious value."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if suspicious == "low":
        s = -s
    elif suspicious != "high":
        raise ValueError("suspicious must be 'low' or 'high'")
    if np.isnan(s).any():
        finite = s[~np.isnan(s)]
        s = np.where(np.isnan(s), (finite.min() - 1.0) if finite.size else 0.0, s)
    return s


def top_k_mask(scores: Any, k: int, *, suspicious: str = "low") -> np.ndarray:
    """Boolean mask of the ``k`` most suspicious samples (ties broken by position, stable)."""
    s = _suspicion(scores, suspicious)
    k = int(max(0, min(k, s.shape[0])))
    mask = np.zeros(s.shape[0], dtype=bool)
    if k:
        mask[np.argsort(-s, kind="stable")[:k]] = True
    return mask


def detection_metrics(
    scores: Any,
    noisy_mask: Any,
    *,
    suspicious: str = "low",
    flagged: Flagged = None,
) -> dict[str, float]:
    """AUROC, average precision and precision/recall/F1 of a flagged set.

    Args:
        scores: (N,) score values.
        noisy_mask: (N,) bool ground truth (True = really noisy / bad).
        suspicious: ``"low"`` or ``"high"``: which end of the score flags a problem.
        flagged: the flagged set for precision/recall/F1: ``None`` (default) = the top-k most
            suspicious with k = number of true positives (then precision = recall = F1, the
            "R-precision"); a float in (0, 1] = that fraction of the most suspicious samples;
            or an explicit (N,) bool mask.

    Returns:
        dict with ``auroc``, ``average_precision`` (NaN when the mask is all one class),
        ``precision``, ``recall``, ``f1``, ``n_flagged``, ``n_positive``, ``n``.
    """
    y = np.asarray(noisy_mask, dtype=bool).reshape(-1)
    s = _suspicion(scores, suspicious)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and noisy_mask {y.shape} differ in length")
    n_pos = int(y.sum())
    both = 0 < n_pos < y.shape[0]
    auroc = float(roc_auc_score(y, s)) if both else float("nan")
    ap = float(average_precision_score(y, s)) if both else float("nan")

    if flagged is None:
        mask = top_k_mask(s, n_pos, suspicious="high")
    elif isinstance(flagged, (float, int)) and not isinstance(flagged, bool) and np.ndim(flagged) == 0:
        if not 0 < float(flagged) <= 1:
            raise ValueError("a flagged fraction must be in (0, 1]")
        mask = top_k_mask(s, int(round(float(flagged) * y.shape[0])), suspicious="high")
    else:
        mask = np.asarray(flagged, dtype=bool).reshape(-1)
        if mask.shape != y.shape:
            raise ValueError("flagged mask must have the same length as noisy_mask")
    tp = int((mask & y).sum())
    n_flag = int(mask.sum())
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "auroc": auroc,
        "average_precision": ap,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n_flagged": n_flag,
        "n_positive": n_pos,
        "n": int(y.shape[0]),
    }


def _is_binary(col: pd.Series) -> bool:
    vals = pd.unique(col.dropna())
    return len(vals) <= 2 and set(np.asarray(vals, dtype=np.float64).tolist()) <= {0.0, 1.0}


def evaluate_scores(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    noisy_mask: Any,
    *,
    flagged: Optional[float] = None,
) -> pd.DataFrame:
    """One row of :func:`detection_metrics` per score column of ``frame`` that has a ScoreInfo.

    Columns without a ScoreInfo (annotations such as ``dynamics.suggested_label``) are skipped.
    For 0/1 scores (``cleanlab.is_issue``, ``dynamics.never_learned``) the flagged set is the
    score's own suspicious value (a top-k cut would break ties arbitrarily); other scores use
    ``flagged`` (None = top-k with k = number of noisy samples, or a fraction).
    """
    rows = []
    for name, info in infos.items():
        if name not in frame.columns:
            continue
        col = frame[name]
        if _is_binary(col):
            hit = col.to_numpy(dtype=np.float64) == (1.0 if info.suspicious == "high" else 0.0)
            m = detection_metrics(col.to_numpy(dtype=np.float64), noisy_mask, suspicious=info.suspicious, flagged=hit)
            flag_rule = "value"
        else:
            m = detection_metrics(col.to_numpy(dtype=np.float64), noisy_mask, suspicious=info.suspicious, flagged=flagged)
            flag_rule = "top-k" if flagged is None else f"top {flagged:.0%}"
        rows.append({"score": name, "suspicious": info.suspicious, **m, "flagged_by": flag_rule})
    cols = ["score", "suspicious", "auroc", "average_precision", "precision", "recall", "f1",
            "n_flagged", "n_positive", "n", "flagged_by"]
    return pd.DataFrame(rows, columns=cols)
