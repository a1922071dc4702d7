"""Suggested labels with a calibrated confidence, from the best class-probability evidence a score table holds.

**The noise posterior first.**  With training dynamics (or a user's ``--pred-probs``) the table holds
:mod:`pruning_core.dynamics.noise`'s ``P(true = k | x, given = y)``: the proxy's probabilities deconvolved
by the noise the labels show, then Bayes' rule with the given label.  It is the suggestion whenever it
exists: it alone conditions on the given label (a sample labelled "cat" whose image is 0.6 dog is not
70 % dog once we know how rarely dogs are labelled cats) and needs no cross-fitting, so every budget
rung has it.  Its confidence is the posterior itself, no temperature fitted.  Measured on all 50,000
CIFAR-10 images with the 180-s rung's proxy (24 px, 8 epochs; docs/benchmarks.md, "Suggested labels from the noise
posterior"): of the relabels it suggests at >= 0.9, 97.5 % are right on sym40, 95.2 % on asym40.

Without it, the product of experts below over these sources (annotation columns, no ``ScoreInfo``:
they are not scores):

* out-of-sample probabilities (``cleanlab.prob.<class>``: the cross-fitted proxy's, or the user's own
  model's): each row predicted by a model that never trained on it, so a memorised wrong label cannot
  vouch for itself;
* CLIP zero-shot (``clip.zero_shot_prob.<class>``): never trained on these labels at all.

**Combination** is a weighted product of experts: ``z = sum_s beta_s * log p_s`` and
``q = softmax(z)``.  With positive weights a class every source ranks first is ranked first by the
product too (``p_s(a) >= p_s(b)`` for all ``s`` implies the same for any weighted geometric mean),
so combining never overrules sources that agree.

**Calibration** (how the ``beta_s``, inverse temperatures, are fitted).  The only labels there
are the ones being audited, and they are noisy, so fitting ``q`` to them directly would teach it
to predict the noise (a calibrated model of 40 %-noisy labels is never more than ~0.6 sure).  We
fit through the *noise channel* instead: if label noise is class-conditional,
``P(given = i | x) = sum_j M[i, j] q_j(x)`` with ``M[i, j] = P(given = i | true = j)``; so ``q``
is calibrated for the *true* label exactly when this mixture is calibrated for the *given* label.
``M`` is estimated by confident learning (cleanlab's ``estimate_joint``, robust to miscalibrated
probabilities by design) and the ``beta_s`` maximise the likelihood of the given labels through
``M``.  The audited labels are therefore used for calibration, through the channel; this is said
in the table's settings (``settings["suggest"]["calibration"]``) and on the Review page.  Under
noise that depends on the image (not only on its class) the channel is misspecified; the
reliability diagram in ``docs/`` (``bench/bench_suggestions.py``) shows how close it comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.dynamics.label_issues import PROB_PREFIX
from pruning_core.dynamics.noise import NOISE_SCORE, NOISE_SUGGESTION, NOISE_SUGGESTION_PROB, noise_channel

if TYPE_CHECKING:
    from pruning_core.audit.review import DecisionStore
    from pruning_core.scoring.score_table import ScoreTable

PROBABILITY_SOURCES: Mapping[str, str] = {
    "out-of-sample probabilities": PROB_PREFIX,
    "CLIP zero-shot": "clip.zero_shot_prob.",
}
"""Source name -> prefix of its per-class probability columns (the class name follows the prefix)."""

SUGGESTED_LABEL = "suggest.label"
SUGGESTION_CONFIDENCE = "suggest.confidence"
SUGGESTION_SETTING = "suggest"
CALIBRATION = ("product of experts; temperature scaling per source through the estimated label-noise channel, fitted on the "
               "given (audited) labels")
CALIBRATION_DIRECT = ("product of experts; temperature scaling per source on the given (audited) labels directly: the estimated noise "
                      "channel was not diagonally dominant (the probabilities barely predict the labels), so the "
                      "confidences are conservative")
POSTERIOR_SOURCE = "noise posterior"
CALIBRATION_POSTERIOR = ("the posterior probability of the true class given the image and its label, under the noise "
                         "model the labels show (Bayes' rule; no temperature fitted)")
_EPS = 1e-7


@dataclass(frozen=True)
class FixConfig:
    """Settings of the "fix" strategies: relabel a sample whose suggestion is at least this sure."""

    threshold: float = field(default=0.9, metadata={"label": "relabel threshold", "help": (
        "calibrated probability of the suggested label at or above which a sample is relabelled instead of "
        "dropped (in (0, 1])")})
    """Calibrated probability of the suggested label at or above which a flagged sample is relabelled."""


def probability_columns(prefix: str, classes: list[str]) -> list[str]:
    """The per-class column names of one source, in ``classes`` order."""
    return [f"{prefix}{c}" for c in classes]


def source_probabilities(frame: pd.DataFrame) -> tuple[list[str], dict[str, np.ndarray]]:
    """The classes and each present source's ``(N, C)`` probabilities (rows renormalised).

    Classes come from the first source's column names; a later source must cover the same classes.
    """
    classes: Optional[list[str]] = None
    probs: dict[str, np.ndarray] = {}
    for name, prefix in PROBABILITY_SOURCES.items():
        names = [c[len(prefix):] for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]
        if not names:
            continue
        if classes is None:
            classes = names
        elif sorted(names) != sorted(classes):
            raise ValueError(f"{name} probabilities cover classes {sorted(names)}, not {sorted(classes)}")
        p = frame[probability_columns(prefix, classes)].to_numpy(dtype=np.float64)
        probs[name] = p / np.clip(p.sum(axis=1, keepdims=True), _EPS, None)
    return classes or [], probs


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ChannelCalibratedExperts:
    """Product of experts over probability sources, with per-source inverse temperatures fitted
    through the label-noise channel (see the module docstring).  ``fit`` then ``predict_proba``."""

    def __init__(self, max_beta: float = 20.0) -> None:
        self.max_beta = max_beta
        self.betas_: Optional[np.ndarray] = None
        self.channel_: Optional[np.ndarray] = None
        self.through_channel_ = False

    @staticmethod
    def _stack(probs: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.log(np.clip(p, _EPS, 1.0)) for p in probs])  # (S, N, C)

    def fit(self, probs: list[np.ndarray], labels: np.ndarray) -> "ChannelCalibratedExperts":
        from scipy.optimize import minimize

        logs = self._stack(probs)
        y = np.asarray(labels, dtype=np.int64)
        self.channel_ = noise_channel(y, _softmax(logs.mean(axis=0)))
        # Class-conditional noise is identifiable only when each class keeps most of its labels (a diagonally
        # dominant M).  An estimate that is not says the probabilities barely predict the labels; then fit
        # to the given labels directly, which under noise can only under-state the confidence.
        self.through_channel_ = bool(np.all(np.diag(self.channel_) > 0.5))
        given_rows = self.channel_[y] if self.through_channel_ else np.eye(logs.shape[2])[y]  # (N, C): M[y_i, j]

        def nll(betas: np.ndarray) -> float:
            q = _softmax(np.tensordot(betas, logs, axes=1))
            return float(-np.mean(np.log(np.clip((q * given_rows).sum(axis=1), _EPS, None))))

        start = np.full(len(probs), 1.0 / len(probs))
        result = minimize(nll, start, method="L-BFGS-B", bounds=[(1e-3, self.max_beta)] * len(probs))
        self.betas_ = np.asarray(result.x, dtype=np.float64)
        return self

    def predict_proba(self, probs: list[np.ndarray]) -> np.ndarray:
        if self.betas_ is None:
            raise ValueError("fit the calibration first")
        return _softmax(np.tensordot(self.betas_, self._stack(probs), axes=1))


SUGGESTION_METHODS = ("auto", "posterior", "experts")
"""``auto``: the noise posterior when the table has it, else the experts (what the product does); the other two force
one (``bench/bench_suggestions.py --method`` compares them on one table)."""


def suggest_labels(frame: pd.DataFrame, method: str = "auto") -> tuple[pd.DataFrame, dict]:
    """``suggest.label`` and ``suggest.confidence`` for every row, and the settings that made them.

    From the noise posterior when the table has it, else from the product of experts over the
    probability sources (see the module docstring; ``method`` forces one of them).  Empty frame and
    settings when the table holds neither.  Rows without probabilities (an unfinished cross-fit: NaN)
    get no suggestion (label None, confidence NaN).
    """
    if method not in SUGGESTION_METHODS:
        raise ValueError(f"unknown suggestion method {method!r}; choose from {', '.join(SUGGESTION_METHODS)}")
    has_posterior = {NOISE_SCORE, NOISE_SUGGESTION, NOISE_SUGGESTION_PROB} <= set(frame.columns)
    if method == "posterior" or (method == "auto" and has_posterior):
        if not has_posterior:
            return pd.DataFrame(index=frame.index), {}
        return _posterior_suggestions(frame)
    return _expert_suggestions(frame)


def _posterior_suggestions(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The noise posterior's most probable true class: the suggested other class where its posterior beats the
    given label's (``1 - noise_score``), else the given label; the confidence is that class's posterior."""
    given_prob = 1.0 - frame[NOISE_SCORE].to_numpy(dtype=np.float64)
    other_prob = frame[NOISE_SUGGESTION_PROB].to_numpy(dtype=np.float64)
    known = np.isfinite(given_prob) & np.isfinite(other_prob)
    relabel = known & (other_prob > given_prob)
    suggested = np.where(relabel, frame[NOISE_SUGGESTION].astype(str), frame["label"].astype(str)).astype(object)
    suggested[~known] = None
    confidence = np.where(known, np.where(relabel, other_prob, given_prob), np.nan)
    out = pd.DataFrame({SUGGESTED_LABEL: suggested, SUGGESTION_CONFIDENCE: confidence}, index=frame.index)
    return out, {"sources": [POSTERIOR_SOURCE], "calibration": CALIBRATION_POSTERIOR}


def _expert_suggestions(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The calibrated product of experts over :data:`PROBABILITY_SOURCES` (see the module docstring)."""
    classes, sources = source_probabilities(frame)
    if not sources:
        return pd.DataFrame(index=frame.index), {}
    stacked = list(sources.values())
    complete = np.all([np.isfinite(p).all(axis=1) for p in stacked], axis=0)
    code = {c: i for i, c in enumerate(classes)}
    labels = frame["label"].astype(str).map(code).to_numpy()
    usable = complete & ~pd.isna(labels)
    experts = ChannelCalibratedExperts().fit([p[usable] for p in stacked], labels[usable].astype(np.int64))
    q = experts.predict_proba([p[usable] for p in stacked])
    suggested = np.full(len(frame), None, dtype=object)
    confidence = np.full(len(frame), np.nan)
    suggested[usable] = np.asarray(classes, dtype=object)[q.argmax(axis=1)]
    confidence[usable] = q.max(axis=1)
    settings = {"sources": list(sources), "betas": [round(float(b), 4) for b in experts.betas_],
                "calibration": CALIBRATION if experts.through_channel_ else CALIBRATION_DIRECT}
    out = pd.DataFrame({SUGGESTED_LABEL: suggested, SUGGESTION_CONFIDENCE: confidence}, index=frame.index)
    return out, settings


def confident_relabels(frame: pd.DataFrame, threshold: float) -> np.ndarray:
    """(N,) bool: rows whose suggestion differs from the given label with confidence >= ``threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"suggestion threshold {threshold!r} must be in (0, 1]")
    if SUGGESTED_LABEL not in frame or SUGGESTION_CONFIDENCE not in frame:
        return np.zeros(len(frame), dtype=bool)
    confidence = frame[SUGGESTION_CONFIDENCE].to_numpy(dtype=np.float64)
    suggested = frame[SUGGESTED_LABEL]
    return ((np.nan_to_num(confidence, nan=-1.0) >= threshold) & suggested.notna().to_numpy()
            & (suggested.astype(str) != frame["label"].astype(str)).to_numpy())


def pending_suggestions(frame: pd.DataFrame, threshold: float, decided: Iterable[str] = ()) -> pd.DataFrame:
    """The samples "accept above ``threshold``" would relabel, most confident first: a confident suggestion
    that differs from the given label, on a sample no decision covers yet (a reviewer's word is never overwritten)."""
    rows = confident_relabels(frame, threshold) & ~frame["path"].astype(str).isin(set(decided)).to_numpy()
    out = frame.loc[rows, ["path", "label", SUGGESTED_LABEL, SUGGESTION_CONFIDENCE]]
    return out.sort_values(SUGGESTION_CONFIDENCE, ascending=False, kind="stable")


def accept_suggestions(store: "DecisionStore", fingerprint: str, pending: pd.DataFrame, *, reviewer: str = "",
                       classes: Optional[Sequence[str]] = None) -> list:
    """Record every row of ``pending`` (:func:`pending_suggestions`) as a relabel to its suggestion: ONE action
    (source ``suggestion``), so :meth:`DecisionStore.undo_action` reverts the whole batch in one step."""
    items = [(str(p), "relabel", str(lab)) for p, lab in zip(pending["path"], pending[SUGGESTED_LABEL])]
    return store.record(fingerprint, items, reviewer=reviewer, classes=classes, source="suggestion")


def with_suggestions(table: "ScoreTable", method: str = "auto") -> "ScoreTable":
    """``table`` with its suggestion columns (re)computed from the probability sources it holds now.

    Called whenever a family is added (the combination depends on every source present), so the
    columns never describe a set of sources the table no longer has.
    """
    from pruning_core.scoring.score_table import ScoreTable  # at call time: scoring's pipeline imports this module

    frame = table.frame.drop(columns=[c for c in (SUGGESTED_LABEL, SUGGESTION_CONFIDENCE) if c in table.frame])
    columns, settings = suggest_labels(frame, method)
    if not settings:
        return table
    merged = pd.concat([frame, columns], axis=1)
    return ScoreTable(merged, dict(table.infos), list(table.notes), {**table.settings, SUGGESTION_SETTING: settings})
