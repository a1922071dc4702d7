"""How likely each given label is wrong under class-dependent noise: the proxy's noise posterior.

Why a posterior rather than the loss.  Real label noise is class-dependent: people confuse cats with
dogs and trucks with automobiles.  A proxy trained on such labels learns the *noisy* class posterior
``p~(j | x) = P(given = j | x)``: on a truck photo with 40 % of trucks labelled "automobile" it says
truck 0.6, automobile 0.4.  A global loss threshold then cannot tell a clean truck labelled "truck"
(loss -log 0.6) from a mislabelled one (loss -log 0.4) across classes, because every clean truck looks
"hard".  The noise process itself resolves it: nobody's car was ever labelled "truck" in that data, so
a sample labelled "truck" is clean whatever its loss.

Derivation.  Under class-conditional noise with transition ``T[k, j] = P(given = j | true = k)``,

    p~(j | x) = sum_k p(k | x) T[k, j]          so          p(. | x) ~ p~(. | x) T^-1

(the backward correction of Patrini et al., CVPR 2017, applied after training instead of in the loss;
solved as the maximum-likelihood ``p`` on the simplex, :func:`clean_class_probs`, rather than by the
inverse, which a misestimated ``T`` turns negative).
``T`` is estimated without any ground truth by confident learning's calibrated joint
``Q[j, k] ~ P(given = j, true = k)`` (``cleanlab.count.estimate_joint``; Northcutt et al., JAIR 2021),
``T[k, j] = Q[j, k] / sum_j Q[j, k]``.  Bayes' rule over the true class, given the image *and* its label:

    P(true = k | x, given = y) = p(k | x) T[k, y] / sum_m p(m | x) T[m, y]

and the score is ``1 - P(true = y | x, given = y)``: the probability that the given label is wrong.
The suggested label is the most probable other true class, ``argmax_{k != y} p(k | x) T[k, y]``, and its
posterior probability is the confidence of the table's suggestions (:mod:`pruning_core.audit.suggest`).
With uniform noise ``T`` is a scaled identity plus a constant, the posterior is monotone in the given
label's probability and the ranking is the loss's; with class-pair noise, classes no one flips into
drop out of the suspicious end.

Which confusion to believe.  Confident learning estimates ``T`` from the proxy's in-sample
probabilities, so under *uniform* noise it also reads the proxy's own confusions (cat/dog) as label
noise, and the posterior then forgives exactly the mislabelled cats it should find (sym40: AUROC 0.964
against the loss's 0.972).  So the posterior uses ``T_w = w T + (1 - w) U``, where ``U`` is uniform
noise at the estimated overall rate (under which the posterior ranks exactly as the loss does) and the
weight ``w`` grows with how *structured* the estimated confusion is: the Gini coefficient of its
off-diagonal entries, mapped linearly from :data:`STRUCTURE_RANGE` to [0, 1].  The range is frozen from
the shared manifests, not fitted on the data being audited: uniform noise gives Gini 0.12 (sym40) to
0.2, class-pair noise 0.82 (confusable30) to 0.88 (asym40), so both kinds sit far outside it and a mix of
the two lands in between.

Measured (docs/benchmarks.md, "Noise detectors on class-dependent noise"): on all 50,000 CIFAR-10
images at the 180-s plan's settings the noise score lifts asym40 from AUROC 0.821 (final loss) to 0.957
and confusable30 from 0.861 to 0.940, and equals the loss on sym40 (0.972).  Of the relabels it suggests at a
posterior of at least 0.9, 97.5 % are right on sym40 and 95.2 % on asym40 ("Suggested labels from the noise
posterior").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.scoring.score_info import ScoreInfo

STRUCTURE_RANGE = (0.3, 0.7)
"""Gini coefficients of the estimated confusion's off-diagonal mass at and above which the posterior believes
uniform noise (weight 0) and the estimated confusion (weight 1); see the module docstring for where they come from."""

DECONVOLUTION_STEPS = 50
"""EM steps of :func:`clean_class_probs` (on the shared manifests AUROC moves < 0.001 between 50 and 200)."""

_TINY = 1e-12

NOISE_SCORE = "dynamics.noise_score"
NOISE_SUGGESTION = "dynamics.noise_suggested_label"
NOISE_SUGGESTION_PROB = "dynamics.noise_suggested_prob"
"""Posterior probability that the suggested other class is the true one (an annotation: the suggestions read it)."""


def noise_channel(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``M[i, j] = P(given = i | true = j)``, from cleanlab's confident-joint estimate of ``P(given, true)``
    (also the channel the suggestions' product of experts calibrates through, :mod:`pruning_core.audit.suggest`)."""
    from cleanlab.count import estimate_joint

    joint = np.asarray(estimate_joint(labels, probs), dtype=np.float64)
    return joint / np.clip(joint.sum(axis=0, keepdims=True), _TINY, None)


def noise_transition(labels: Any, probs: np.ndarray) -> np.ndarray:
    """(C, C) ``T[true, given]`` estimated from the given labels and the proxy's probabilities, no ground truth:
    the transpose of :func:`noise_channel`, so the posterior and the suggestions read one estimate."""
    return noise_channel(np.asarray(labels).astype(np.int64, copy=False), _normalised(probs)).T


def clean_class_probs(probs: np.ndarray, transition: np.ndarray, iterations: int = DECONVOLUTION_STEPS) -> np.ndarray:
    """(N, C) ``p(true | x)``: the distribution on the simplex whose noisy image ``p T`` is closest to ``probs``.

    Maximum likelihood (``min_p KL(probs || p T)``) by EM's multiplicative update
    ``p_k <- p_k sum_j T[k, j] probs_j / (p T)_j`` from the uniform distribution; each step keeps ``p`` a
    distribution and never increases the divergence.  Unlike ``probs T^-1`` it needs no clipping where a
    misestimated ``T`` would make a class probability negative.
    """
    noisy = _normalised(probs)
    trans = np.asarray(transition, dtype=np.float64)
    clean = np.full_like(noisy, 1.0 / noisy.shape[1])
    for _ in range(iterations):
        clean *= (noisy / np.clip(clean @ trans, _TINY, None)) @ trans.T
        clean /= clean.sum(axis=1, keepdims=True)  # exact already; removes rounding drift
    return clean


def confusion_structure(transition: np.ndarray) -> float:
    """Gini coefficient of ``transition``'s off-diagonal entries: 0 when every class is confused with every
    other alike (uniform noise), towards 1 when the confusion sits in a few class pairs."""
    trans = np.asarray(transition, dtype=np.float64)
    off = np.sort(trans[~np.eye(len(trans), dtype=bool)])
    if off.sum() <= 0:
        return 0.0
    ranks = np.arange(1, len(off) + 1)
    return float((2 * ranks - len(off) - 1) @ off / (len(off) * off.sum()))


def believed_transition(transition: np.ndarray) -> tuple[np.ndarray, float]:
    """``(T_w, w)``: the estimated ``transition`` blended with uniform noise at its overall rate by how structured
    it is (:func:`confusion_structure` mapped from :data:`STRUCTURE_RANGE` to the weight ``w`` in [0, 1])."""
    trans = np.asarray(transition, dtype=np.float64)
    c = len(trans)
    low, high = STRUCTURE_RANGE
    weight = float(np.clip((confusion_structure(trans) - low) / (high - low), 0.0, 1.0))
    rate = 1.0 - float(np.trace(trans)) / c
    uniform = np.full((c, c), rate / max(c - 1, 1))
    np.fill_diagonal(uniform, 1.0 - rate)
    return weight * trans + (1.0 - weight) * uniform, weight


def true_class_posterior(labels: Any, probs: np.ndarray, transition: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, C) ``P(true = k | x, given = y)``: Bayes' rule over the true class, given the image *and* its label.

    ``probs``: (N, C) the proxy's softmax (trained on the given labels); ``transition``: the noise model
    ``T[true, given]`` to believe (default: :func:`believed_transition` of :func:`noise_transition` of the
    same arrays).
    """
    y = np.asarray(labels).astype(np.int64, copy=False)
    p = _normalised(probs)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N={y.shape[0]}, got {p.shape}")
    trans = (believed_transition(noise_transition(y, p))[0] if transition is None
             else np.asarray(transition, dtype=np.float64))
    joint = clean_class_probs(p, trans) * trans[:, y].T  # (N, C): p(k | x) T[k, y_i]
    return joint / np.clip(joint.sum(axis=1, keepdims=True), _TINY, None)


def mislabel_posterior(labels: Any, probs: np.ndarray, transition: Optional[np.ndarray] = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(probability that each given label is wrong (N,), most probable other true class (N,) int), from
    :func:`true_class_posterior` (same arguments)."""
    y = np.asarray(labels).astype(np.int64, copy=False)
    wrong, other, _ = _wrong_and_other(y, true_class_posterior(y, probs, transition))
    return wrong, other


def _wrong_and_other(y: np.ndarray, posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1 - P(true = given), the most probable other class, its probability) of each row of ``posterior``."""
    rows = np.arange(len(y))
    wrong = np.clip(1.0 - posterior[rows, y], 0.0, 1.0)
    others = posterior.copy()
    others[rows, y] = -np.inf
    other = others.argmax(axis=1)
    return wrong, other, posterior[rows, other]


def noise_scores(labels: Any, probs: np.ndarray | Sequence[np.ndarray], classes: Sequence[str], *, source: str
                 ) -> tuple[pd.DataFrame, dict[str, ScoreInfo], dict]:
    """``dynamics.noise_score``, ``dynamics.noise_suggested_label`` and its posterior probability
    (``dynamics.noise_suggested_prob``, an annotation) in the project's ``(frame, infos)`` form,
    with the noise model they believed (for the score table's settings: what a reader needs to trust them).

    ``probs``: one (N, C) array, or several (the recording run's and the cleaned cross-fitting's, which
    err differently: one has seen the sample, the other has not): each is corrected for the noise its own
    estimate shows and the posteriors are averaged, an average of probabilities of the same event.
    ``source`` says in words whose probabilities these are (for the column's description).
    """
    y = np.asarray(labels).astype(np.int64, copy=False)
    names = np.asarray(list(classes), dtype=object)
    posteriors, models = [], []
    for p in [probs] if isinstance(probs, np.ndarray) else probs:
        estimated = noise_transition(y, p)
        believed, weight = believed_transition(estimated)
        posteriors.append(true_class_posterior(y, p, believed))
        models.append({"structure": round(confusion_structure(estimated), 4), "structure_weight": round(weight, 4),
                       "estimated_noise_rate": round(1 - float(np.trace(estimated)) / len(estimated), 4),
                       "transition": {"classes": [str(c) for c in names],
                                      "true_by_given": np.round(estimated, 4).tolist()}})
    wrong, other, other_prob = _wrong_and_other(y, np.mean(posteriors, axis=0))
    frame = pd.DataFrame({NOISE_SCORE: wrong, NOISE_SUGGESTION: names[other].astype(str),
                          NOISE_SUGGESTION_PROB: other_prob})
    infos = {NOISE_SCORE: ScoreInfo(
        NOISE_SCORE,
        f"Probability that the given label is wrong, from {source} corrected for the noise the labels show "
        "(confident learning's estimate of which classes are confused with which, then Bayes' rule). "
        "High: likely mislabelled. Unlike the loss it does not flag hard samples of classes nobody "
        "confuses with another.",
        "high",
    )}
    settings = {"source": source, **models[0], **({"averaged_with": models[1:]} if len(models) > 1 else {})}
    return frame, infos, settings


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax of (N, C) logits in float64 (the record keeps logits, the posterior needs probabilities)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _normalised(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN/inf")
    return p / p.sum(axis=1, keepdims=True)
