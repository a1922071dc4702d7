"""Confident learning on out-of-sample probabilities, via the cleanlab library.

We do not reimplement confident learning: :func:`find_label_issues` is cleanlab's
``filter.find_label_issues`` (the boolean issue mask) plus ``rank.get_label_quality_scores``
(per-sample label quality), with the suggested label ``argmax(pred_probs)``.  The probabilities
must be out-of-sample (see :mod:`pruning_core.dynamics.crossfit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pruning_core.scoring.score_info import ScoreInfo

PROB_PREFIX = "cleanlab.prob."
"""Prefix of the out-of-sample probability columns (``cleanlab.prob.<class>``): annotations the suggestions read."""


@dataclass(frozen=True)
class LabelIssues:
    """cleanlab's verdict per sample."""

    is_issue: np.ndarray  # (N,) bool, cleanlab's label-issue mask
    label_quality: np.ndarray  # (N,) float in [0, 1], low = likely mislabelled
    suggested_label: np.ndarray  # (N,) int, argmax of pred_probs


def find_label_issues(
    labels: Any,
    pred_probs: np.ndarray,
    *,
    quality_method: str = "self_confidence",
    filter_by: str = "prune_by_noise_rate",
    n_jobs: int = 1,
    **kw: Any,
) -> LabelIssues:
    """Run cleanlab on ``(labels, pred_probs)``.

    Args:
        labels: (N,) int given labels.
        pred_probs: (N, C) out-of-sample probabilities (rows sum to 1).
        quality_method: ``"self_confidence"`` (default), ``"normalized_margin"`` or
            ``"confidence_weighted_entropy"`` (cleanlab.rank.get_label_quality_scores ``method``).
        filter_by: cleanlab's filter (default ``"prune_by_noise_rate"``).
        n_jobs: cleanlab worker processes; 1 by default (no multiprocessing in app/CLI workers).
        **kw: more ``cleanlab.filter.find_label_issues`` options.
    """
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(labels).astype(np.int64, copy=False)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"pred_probs must be (N, C) with N={y.shape[0]}, got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("pred_probs contain NaN/inf (an unfinished cross-fit?)")
    if not np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=1e-12):  # bf16 inference leaves rows a hair off 1;
        p = p / p.sum(axis=1, keepdims=True)  # rows that sum to 1 go to cleanlab as given (identical results)
    mask = cl_find(y, p, filter_by=filter_by, n_jobs=n_jobs, **kw)
    quality = get_label_quality_scores(y, p, method=quality_method)
    return LabelIssues(
        is_issue=np.asarray(mask, dtype=bool),
        label_quality=np.asarray(quality, dtype=np.float64),
        suggested_label=p.argmax(axis=1).astype(np.int64),
    )


def label_issue_scores(
    labels: Any,
    pred_probs: np.ndarray,
    classes: Sequence[str],
    **kw: Any,
) -> tuple[pd.DataFrame, dict[str, ScoreInfo]]:
    """Score columns from cleanlab, in the project's ``(frame, infos)`` form.

    Columns: ``cleanlab.label_quality`` (low suspicious), ``cleanlab.is_issue`` (0/1, high
    suspicious), ``dynamics.suggested_label`` (the class *name* the out-of-sample model
    prefers) and the out-of-sample probabilities themselves, one ``cleanlab.prob.<class>`` column per
    class (what :mod:`pruning_core.audit.suggest` calibrates and combines).  The latter is an annotation, not a score: it has no ``ScoreInfo``.  Convention:
    a frame column without an entry in ``infos`` is not a score (not ranked, coloured or
    evaluated), it is shown beside the scores (e.g. "suggested: cat" in the review page).
    ``**kw`` goes to :func:`find_label_issues`.
    """
    res = find_label_issues(labels, pred_probs, **kw)
    cls = np.asarray(list(classes), dtype=object)
    if cls.shape[0] != np.asarray(pred_probs).shape[1]:
        raise ValueError(f"{cls.shape[0]} class names for {np.asarray(pred_probs).shape[1]} probability columns")
    method = kw.get("quality_method", "self_confidence")
    frame = pd.DataFrame(
        {
            "cleanlab.label_quality": res.label_quality,
            "cleanlab.is_issue": res.is_issue.astype(np.int8),
            "dynamics.suggested_label": cls[res.suggested_label].astype(str),
            **{f"{PROB_PREFIX}{c}": np.asarray(pred_probs)[:, i]
               for i, c in enumerate(cls)},
        }
    )
    infos = {
        "cleanlab.label_quality": ScoreInfo(
            "cleanlab.label_quality",
            f"cleanlab label quality ({method}) from out-of-sample probabilities. "
            "Low: the held-out model doubts the given label - likely mislabelled.",
            "low",
        ),
        "cleanlab.is_issue": ScoreInfo(
            "cleanlab.is_issue",
            "1 if confident learning (cleanlab.find_label_issues) flags the label as an issue.",
            "high",
        ),
    }
    return frame, infos


def confident_joint_counts(labels: np.ndarray, pred_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cleanlab's uncalibrated confident joint of a row resample given as per-row counts, without copying rows.

    ``weights[i]`` is how often row ``i`` is drawn.  Equal to
    ``cleanlab.count.compute_confident_joint(labels[rows], pred_probs[rows], calibrate=False)`` (weighted
    per-class thresholds, the same ``- 1e-6`` slack, the same tie rules and the diagonal clipped at 1), but one
    pass over the original ``N x C`` array instead of a copy and cleanlab's input checks per resample: what makes
    a 100-resample bootstrap of 50,000 rows take tenths of a second instead of seconds.
    """
    from cleanlab.internal.constants import CONFIDENT_THRESHOLDS_LOWER_BOUND

    c = pred_probs.shape[1]
    per_class = np.bincount(labels, weights=weights, minlength=c)
    summed = np.zeros(c)
    np.add.at(summed, labels, weights * pred_probs[np.arange(len(labels)), labels])
    thresholds = np.where(per_class > 0, summed / np.maximum(per_class, 1), 2.0)  # 2: cleanlab's absent class
    confident = pred_probs >= np.clip(thresholds, CONFIDENT_THRESHOLDS_LOWER_BOUND, None) - 1e-6
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, pred_probs.argmax(axis=1), confident.argmax(axis=1))
    counted = weights * (n_confident > 0)
    joint = np.bincount(labels * c + guess, weights=counted, minlength=c * c).reshape(c, c)
    joint = np.rint(joint).astype(np.int64)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    return joint


def estimated_issue_count(labels: Any, pred_probs: np.ndarray, *, level: float = 0.9, boots: int = 100,
                          seed: int = 0) -> dict:
    """cleanlab's estimate of how many labels are wrong, with a bootstrap interval, for the score table's settings.

    ``cleanlab.count.num_label_issues`` with ``off_diagonal_calibrated``: the confident joint
    calibrated so its rows sum to the label counts, off-diagonal mass = estimated wrong labels.
    The interval recomputes it on ``boots`` row resamples (seeded): how much the count moves with
    the sample, not the proxy's own bias (a weak proxy overcounts: docs/benchmarks.md), so the Overview
    shows it as evidence beside the mislabel finding's estimate, not as the estimate.  Each resample is
    counted as :func:`confident_joint_counts` weights, then calibrated by cleanlab's own functions, so a
    resample's count is the one ``num_label_issues`` gives on the copied rows.
    """
    from cleanlab.count import calibrate_confident_joint, estimate_joint, num_label_issues

    y = np.asarray(labels).astype(np.int64, copy=False)
    p = np.asarray(pred_probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    count = int(num_label_issues(y, p, estimation_method="off_diagonal_calibrated"))
    rng = np.random.default_rng(seed)
    counts = []
    for _ in range(boots):
        weights = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y))
        drawn = np.repeat(y, weights)
        if len(np.unique(drawn)) == p.shape[1]:  # cleanlab needs every class present
            joint = confident_joint_counts(y, p, weights.astype(np.float64))
            calibrated = calibrate_confident_joint(joint, drawn)
            counts.append(int(np.rint((1.0 - estimate_joint(drawn, p, confident_joint=calibrated).trace()) * len(y))))
    tail = 100 * (1 - level) / 2
    low, high = (np.percentile(counts, [tail, 100 - tail]) if counts else (count, count))
    return {"estimated_issues": count, "low": float(low), "high": float(high), "level": level,
            "method": "cleanlab.count.num_label_issues(off_diagonal_calibrated), bootstrap over rows"}
