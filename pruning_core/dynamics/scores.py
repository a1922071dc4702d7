"""Training-dynamics scores from a :class:`~pruning_core.dynamics.trainer.TrainingRecord`.

All formulas follow research.md section 1; every score is one vectorised reduction over the
epoch axis of the (E, N) record arrays.  Directions (``ScoreInfo.suspicious``) say which end is
"more likely a problem (mislabelled / corrupt) or uninformative":

=========================  ==========  ====================================================
column                     suspicious  why
=========================  ==========  ====================================================
dynamics.confidence        low         the model rarely believes the given label
dynamics.variability       low         low = stable: easy (redundant) or consistently wrong
dynamics.aum               low         negative margin = another class wins = mislabelled
dynamics.forgetting        high        learned then forgotten = hard or noisy
dynamics.never_learned     high        (0/1) never classified as its label in any epoch
dynamics.el2n              high        large early error = hard or mislabelled
dynamics.dyn_unc           low         low = easy (redundant) or consistently wrong (noise)
dynamics.final_loss        high        still misfit after training
=========================  ==========  ====================================================

With ``classes`` the frame also holds ``dynamics.predicted_label``: the class *name* the proxy
predicts after the last epoch (argmax of its final logits).  Like ``clip.suggested_label`` it is an
annotation, not a score (no ``ScoreInfo``): the label a dynamics-only "likely mislabelled" finding
suggests when no cross-fitting ran (so no cleanlab ``dynamics.suggested_label``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.scoring.score_info import ScoreInfo

from .trainer import TrainingRecord


def default_el2n_epoch(n_epochs: int) -> int:
    """EL2N is meant to be read early (epoch 20 of 200 in Paul et al.): ~1/8 of the run, >= 1."""
    return max(1, n_epochs // 8)


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """(E, N) bool -> (N,) number of epochs where a sample goes from correct to incorrect."""
    c = np.asarray(correct, dtype=bool)
    if c.shape[0] < 2:
        return np.zeros(c.shape[1], dtype=np.int64)
    return (c[:-1] & ~c[1:]).sum(axis=0).astype(np.int64)


def dynamic_uncertainty(prob: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Dyn-Unc (He et al.) of (K, N) per-epoch given-label probabilities.

    ``U_k = std(p_k, ..., p_{k+J-1})`` (unbiased, ddof=1) for ``k = 0 .. K-J-1`` and
    ``Dyn-Unc = mean_k U_k`` - the window start range follows research.md / the reference code
    (K - J windows).  Fallback when the run is too short for that (``K <= J``): one window over all
    K epochs (J = K).  With a single epoch the std is undefined and the score is 0.

    Returns the scores and the window length actually used.
    """
    p = np.asarray(prob, dtype=np.float64)
    k_epochs = p.shape[0]
    if k_epochs < 2:
        return np.zeros(p.shape[1], dtype=np.float64), k_epochs
    j = int(window)
    if j < 2:
        raise ValueError("dyn_unc window must be >= 2 epochs")
    if k_epochs <= j:
        return p.std(axis=0, ddof=1), k_epochs
    n_windows = k_epochs - j
    win = np.lib.stride_tricks.sliding_window_view(p, j, axis=0)[:n_windows]  # (K-J, N, J)
    return win.std(axis=-1, ddof=1).mean(axis=0), j


def dynamics_scores(
    record: TrainingRecord,
    *,
    el2n_epoch: Optional[int] = None,
    dynunc_window: int,
    classes: Optional[Sequence[str]] = None,
) -> tuple[pd.DataFrame, dict[str, ScoreInfo]]:
    """Score every recorded sample from its training dynamics.

    Args:
        record: the trainer's per-epoch record (rows of the frame follow ``record.record_idx``).
        el2n_epoch: 1-based epoch whose EL2N is reported; default ``max(1, E // 8)`` (2 of 16).
        dynunc_window: Dyn-Unc window J (He et al. use 10); shorter runs fall back to J = E.
        classes: class names by label id; given, ``dynamics.predicted_label`` names the last epoch's argmax.

    Returns:
        ``(frame, infos)``: one column per score named ``dynamics.<score>``, ``infos`` maps each
        column to its :class:`ScoreInfo`.
    """
    e = record.n_epochs
    if e < 1:
        raise ValueError("the record has no epochs")
    t_el2n = default_el2n_epoch(e) if el2n_epoch is None else int(el2n_epoch)
    if not 1 <= t_el2n <= e:
        raise ValueError(f"el2n_epoch must be in 1..{e}, got {t_el2n}")
    prob = np.asarray(record.prob, dtype=np.float64)
    correct = np.asarray(record.correct, dtype=bool)
    dyn_unc, j_used = dynamic_uncertainty(prob, dynunc_window)
    frame = pd.DataFrame(
        {
            "dynamics.confidence": prob.mean(axis=0),
            "dynamics.variability": prob.std(axis=0),
            "dynamics.aum": np.asarray(record.margin, dtype=np.float64).mean(axis=0),
            "dynamics.forgetting": forgetting_events(correct),
            "dynamics.never_learned": (~correct.any(axis=0)).astype(np.int8),
            "dynamics.el2n": np.asarray(record.el2n[t_el2n - 1], dtype=np.float64),
            "dynamics.dyn_unc": dyn_unc,
            "dynamics.final_loss": np.asarray(record.loss[-1], dtype=np.float64),
        }
    )
    if classes is not None:
        names = np.asarray(list(classes), dtype=object)
        if names.shape[0] != record.num_classes:
            raise ValueError(f"{names.shape[0]} class names for a record of {record.num_classes} classes")
        frame["dynamics.predicted_label"] = names[np.asarray(record.final_logits).argmax(axis=1)].astype(str)
    fallback = f" (run shorter than the window J={dynunc_window}: one window over all {e} epochs)" if j_used != dynunc_window else ""
    infos = {
        "dynamics.confidence": ScoreInfo(
            "dynamics.confidence",
            f"Mean over {e} epochs of the proxy's probability for the given label (dataset cartography). "
            "Low: the model rarely agrees with the label - mislabelled or very hard.",
            "low",
        ),
        "dynamics.variability": ScoreInfo(
            "dynamics.variability",
            "Std over epochs of the given-label probability (dataset cartography). High: ambiguous "
            "samples whose belief swings - the informative ones pruning keeps. Low: stable samples, either "
            "easy (high confidence, redundant) or hard-to-learn/consistently wrong (low confidence, often "
            "mislabelled), so low is marked suspicious, as for dyn_unc; read it together with confidence.",
            "low",
        ),
        "dynamics.aum": ScoreInfo(
            "dynamics.aum",
            "Area under the margin: mean over epochs of given-label logit minus the largest other logit. "
            "Low or negative: another class consistently wins - likely mislabelled.",
            "low",
        ),
        "dynamics.forgetting": ScoreInfo(
            "dynamics.forgetting",
            "Forgetting events: epochs where the sample goes from correctly to incorrectly classified. "
            "High: unstable, hard or noisy. Never-learned samples score 0 here; see dynamics.never_learned.",
            "high",
        ),
        "dynamics.never_learned": ScoreInfo(
            "dynamics.never_learned",
            "1 if the sample was never classified as its given label in any epoch (counted apart from "
            "forgetting). 1 is suspicious: often mislabelled.",
            "high",
        ),
        "dynamics.el2n": ScoreInfo(
            "dynamics.el2n",
            f"EL2N at epoch {t_el2n}: L2 norm of softmax minus one-hot label early in training. "
            "High: hard or mislabelled; low: easy, safe to prune for efficiency.",
            "high",
        ),
        "dynamics.dyn_unc": ScoreInfo(
            "dynamics.dyn_unc",
            f"Dynamic uncertainty (He et al.): unbiased std of the given-label probability over sliding "
            f"windows of J={j_used} epochs, averaged over windows{fallback}. Pruning keeps HIGH values "
            "(uncertain, informative); LOW values hold easy samples and consistently-wrong (often "
            "mislabelled) ones, so low is marked suspicious (likely a problem or uninformative).",
            "low",
        ),
        "dynamics.final_loss": ScoreInfo(
            "dynamics.final_loss",
            "Cross-entropy of the given label after the last epoch. High: still misfit - hard or mislabelled.",
            "high",
        ),
    }
    return frame, infos
