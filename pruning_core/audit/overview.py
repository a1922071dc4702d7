"""The audit at a glance: which samples each detector flags, per-class label quality, class flips, a report.

Plain functions over a score table (``frame`` with ``<family>.<score>`` columns and their
:class:`~pruning_core.scoring.score_info.ScoreInfo`), so the app, the CLI and a notebook all get the
same numbers.  Every finding carries the score and the threshold that flags it, so the report
says *why* a sample is counted, and the rows it flags, so a page can open exactly those.

Thresholds are either fixed rules from the scores' own meaning (CLIP's zero-shot top-1 differs
from the label with at least ``mislabel_margin`` probability; cleanlab's own ``is_issue``;
near-duplicate groups found at the scoring's cosine threshold) or robust z-scores
(median +- ``z`` x 1.4826 x MAD), which adapt to each dataset's spread without a hand-tuned
absolute cosine.

Every finding also carries an :class:`~pruning_core.audit.estimates.Estimate`: how many of its
flagged samples are *true* problems, with the precision's 90 % interval and where it comes from,
in this order of preference:

1. reviewer verdicts on the finding's random audit picks (paths tagged ``audit:<kind>`` in the
   DecisionStore; remove/relabel = problem, keep = fine): a Jeffreys interval on an unbiased
   sample.  Verdicts on other members (the ranked top a reviewer opened first) are left out: they
   describe the top of a ranking, not the finding;
2. a model of the rule's precision from the scores alone.  Every mislabel rule flags samples whose
   model top-1 is not the given label (cleanlab's cross-fitted proxy, CLIP zero-shot, the dynamics
   proxy's last epoch); a flagged sample is either mislabelled or one the model gets wrong.  The
   given label's score tells them apart: for a mislabelled sample the given label is some *other*
   class, so its label quality (cleanlab), label alignment (CLIP) or area under the margin and final
   loss (dynamics) look like those of a random wrong class, far below those of a true class the
   model merely ranks second.  A two-component Gaussian mixture of that score over the flagged
   members gives each one a probability ``q_i`` of being mislabelled (the lower component); the
   estimate is ``sum q_i`` with the Poisson-binomial variance ``sum q_i (1 - q_i)`` plus the
   bootstrap variance of the fit (``estimates.mixture_estimate``); two scores give an interval
   spanning both fits.  The caption rule works the same way (a mismatched caption's cosine is that of
   a random caption).  Only a model that passes its fitness check (``fitness``) calibrates: a proxy
   near chance gives the raw count with precision [0, 1] and says why, and the next rule in order
   (cleanlab, CLIP, in-sample dynamics) is tried first.  cleanlab's own confident-joint count of
   wrong labels (``settings["cleanlab"]``, recorded at scoring time with a bootstrap interval) is
   shown as evidence beside it: it counts the whole dataset and inherits the proxy's bias.
   Measured against the demo's ground truth and a CIFAR-10 folder with planted flips in
   docs/benchmarks.md;
3. no model (outliers, near-duplicates): the raw count with the honest precision interval [0, 1]
   until a random audit is reviewed.

A CLIP model that does not know the data (:func:`pruning_core.audit.fitness.clip_fits`) feeds no
finding; ``Overview.evidence`` says which evidence each finding rests on and which is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Collection, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.audit import estimates
from pruning_core.audit.estimates import Estimate
from pruning_core.audit.fitness import FitnessConfig, FitnessReport, clip_fits, proxy_fits
from pruning_core.dynamics.noise import NOISE_SCORE, NOISE_SUGGESTION
from pruning_core.scoring.score_info import ScoreInfo

UNDECIDED = "undecided"
PROBLEM_ACTIONS = ("remove", "relabel")
"""A reviewer verdict that confirms a finding's sample is a problem (``keep`` says it is fine)."""
AUDIT_TAG_PREFIX = "audit:"
MAD_TO_SIGMA = 1.4826
"""MAD x this estimates the standard deviation of normally distributed values."""


@dataclass(frozen=True)
class OverviewConfig:
    """Where each finding's threshold sits (defaults live here only)."""

    mislabel_margin: float = 0.5
    """CLIP flags a label when p(zero-shot top-1) - p(given label) is at least this (top-1 != label)."""
    outlier_z: float = 3.0
    """Robust z of ``clip.outlier`` (distance to the k nearest neighbours) above which a sample is an outlier."""
    caption_z: float = 3.0
    """Robust z of ``clip.caption_alignment`` below which an image and its caption mismatch."""
    audit_size: int = 30
    """Random undecided members one "Audit a random sample" click sends to Review."""
    mixture_boots: int = 30
    """Bootstrap refits behind a mixture estimate's interval (the fit's own uncertainty)."""
    noise_posterior_cut: float = 0.5
    """``dynamics.noise_score`` (the probability a label is wrong) at or above which a sample is likely mislabelled."""
    fitness: FitnessConfig = FitnessConfig()


@dataclass(frozen=True)
class Finding:
    """One kind of problem: how many samples, flagged by which score at which threshold, and which rows."""

    kind: str  # "mislabelled" | "outliers" | "duplicates" | "caption mismatch" | "unreadable" | "dark images" ...
    title: str
    score: str
    rule: str
    """The threshold in words with its number, e.g. ``clip.outlier > 0.412 (robust z > 3)``."""
    rows: np.ndarray = field(repr=False)
    """Row labels of ``frame`` that this finding flags (empty for skipped files, which have no row)."""
    count: int
    open: int
    """Flagged samples without a review decision yet (equal to ``count`` for unreadable files)."""
    groups: Optional[int] = None  # near-duplicate groups only
    threshold: Optional[float] = None
    """The number in ``rule`` (a margin, a score value, a cosine), for a report a program reads."""
    estimate: Optional[Estimate] = None
    """How many flagged samples are true problems, with the precision's interval and its source."""
    evidence: str = ""
    """Which scores the finding rests on, in words."""

    def summary(self) -> dict:
        """The JSON-able numbers (no row list)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "estimate")}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, "estimate": self.estimate.summary()} if self.estimate is not None else out


@dataclass(frozen=True)
class Mislabels:
    """Which samples are likely mislabelled, by which detector, and what it suggests instead."""

    mask: np.ndarray  # bool (N,)
    score: str
    suggested: str  # column of suggested class names
    rule: str
    threshold: Optional[float] = None
    problem_prob: Optional[np.ndarray] = None
    """(N,) the model's probability that each flagged row is truly mislabelled (0 where not flagged)."""
    estimate: Optional[Estimate] = None
    """The model's estimate of true mislabels among the flagged (before any audit verdicts)."""
    evidence: str = ""


@dataclass(frozen=True)
class Overview:
    """Everything the Overview page and report show."""

    n_samples: int
    findings: list[Finding]
    class_quality: pd.DataFrame
    flips: pd.DataFrame
    """given label (rows) x suggested label (columns): flagged samples still without a decision."""
    mislabels: Optional[Mislabels]
    settings: dict = field(default_factory=dict)
    """What the numbers depend on: the thresholds (``OverviewConfig``) and how the scores were made
    (the score table's settings: k, duplicate cosine, CLIP weights, proxy plan...), for the report."""
    fitness: Optional[FitnessReport] = None
    """Whether the CLIP model knows this data (None without CLIP zero-shot scores)."""
    evidence: list[str] = field(default_factory=list)
    """What the findings rest on and what is missing, one sentence each."""

    def finding(self, kind: str) -> Optional[Finding]:
        return next((f for f in self.findings if f.kind == kind), None)


def robust_threshold(values: np.ndarray, suspicious: str, z: float) -> float:
    """median + z x sigma (``suspicious == "high"``) or median - z x sigma, sigma estimated from the MAD."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan")
    median = float(np.median(values))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    return median + z * sigma if suspicious == "high" else median - z * sigma


NO_OOS = ("no out-of-sample probabilities: cross-fitting was not run at this budget — run it (folds ≥ 2) "
          "for cleanlab's estimate")


def _mixture_mislabels(frame: pd.DataFrame, mask: np.ndarray, scores: Sequence[str], suggested: str, rule: str,
                       evidence: str, config: OverviewConfig, threshold: Optional[float] = None) -> Mislabels:
    """A top-1-disagrees rule, calibrated by a mixture of each of ``scores`` (oriented low = wrong class) over its
    flagged rows; several scores give an estimate spanning all their intervals (``estimates.span``)."""
    parts, probs = [], []
    for score in scores:
        values = _oriented(frame, score)[mask]
        est, q = estimates.mixture_estimate(values, boots=config.mixture_boots, source=score)
        if q is None:
            return Mislabels(mask, scores[0], suggested, rule, threshold, estimate=est, evidence=evidence)
        parts.append(est)
        probs.append(q)
    names = " and ".join(scores)
    est = estimates.span(parts, source=f"two-component mixture of {names} over the flagged samples"
                         + (" (interval spans both fits)" if len(scores) > 1 else "") + "; no verdicts yet")
    prob = np.zeros(len(frame))
    prob[mask] = np.mean(probs, axis=0)
    return Mislabels(mask, scores[0], suggested, rule, threshold, prob, est, evidence)


ORIENTED_SCORES = {"dynamics.final_loss": lambda v: -v}
"""Scores whose suspicious end is high, negated so that low is the mislabelled end for a mixture."""


def _oriented(frame: pd.DataFrame, score: str) -> np.ndarray:
    values = frame[score].to_numpy(dtype=float)
    return ORIENTED_SCORES.get(score, lambda v: v)(values)


CROSS_FITTED_PROXY = "the cross-fitted proxy"


def out_of_sample_model(scoring: Mapping[str, Any]) -> str:
    """Whose out-of-sample probabilities the ``cleanlab.*`` columns came from, in words: the user's own model when
    the table was scored with ``--pred-probs`` (recorded in ``settings["cleanlab"]["pred_probs"]``), else the proxy."""
    return ("your model's out-of-sample probabilities" if (scoring.get("cleanlab") or {}).get("pred_probs")
            else CROSS_FITTED_PROXY)


def cleanlab_count_note(scoring: Mapping[str, Any]) -> Optional[str]:
    """cleanlab's confident-joint count of wrong labels in the whole dataset, recorded at scoring time, in words.

    It counts wrong labels in *all* samples, not true ones among the flagged, and it inherits every
    bias of the model behind it (on the demo a 6-epoch, width-8 proxy agreeing with 42 % of the
    labels out of sample counted 1,331 for the true 240), so it is evidence beside the finding's
    estimate, not the estimate.
    """
    recorded = dict(scoring.get("cleanlab") or {})
    if "estimated_issues" not in recorded:
        return None
    return (f"cleanlab's confident joint counts {recorded['estimated_issues']:,} wrong labels in the whole dataset "
            f"({recorded.get('level', 0.9):.0%} bootstrap {recorded['low']:,.0f}–{recorded['high']:,.0f}), "
            f"as good as {out_of_sample_model(scoring)}")


_Build = Callable[[Optional[FitnessReport]], Mislabels]


def _uncalibrated(flags: Mislabels, unfit: FitnessReport) -> Mislabels:
    """A rule's flags as a raw count whose source quotes the failed fitness check of the model behind them."""
    why = f"uncalibrated: {unfit.verdict} Score with a larger budget (more epochs) to calibrate it"
    return replace(flags, estimate=estimates.uncalibrated(int(flags.mask.sum()), why),
                   evidence=flags.evidence + "; the model is too weak to calibrate it")


def _rules(frame: pd.DataFrame, config: OverviewConfig, clip_fit: bool, oos_model: str
           ) -> list[tuple[Optional[FitnessReport], _Build]]:
    """Each mislabel rule the table supports, in order of preference, with the fitness of the model behind it.

    A builder given a failed fitness report returns the rule's flags with an uncalibrated estimate that
    quotes the report; given None, the flags calibrated by a mixture (see the module docstring).
    """
    labels = frame["label"].astype(str).to_numpy()
    rules: list[tuple[Optional[FitnessReport], _Build]] = []

    def rule(mask: np.ndarray, scores: list[str], suggested: str, text: str, evidence: str,
             threshold: Optional[float] = None) -> _Build:
        def build(unfit: Optional[FitnessReport]) -> Mislabels:
            missing = [score for score in scores if score not in frame]
            if unfit is None and not missing:
                return _mixture_mislabels(frame, mask, scores, suggested, text, evidence, config, threshold)
            if not missing:
                return _uncalibrated(Mislabels(mask, scores[0], suggested, text, threshold, evidence=evidence), unfit)
            why = f"no {missing[0]} to calibrate the rule: audit a random sample"
            return Mislabels(mask, scores[0], suggested, text, threshold,
                             estimate=estimates.uncalibrated(int(mask.sum()), why), evidence=evidence)
        return build

    if {"cleanlab.is_issue", "dynamics.suggested_label"} <= set(frame.columns):
        rules.append((proxy_fits(frame, predicted="dynamics.suggested_label", model=oos_model, config=config.fitness),
                      rule(frame["cleanlab.is_issue"].to_numpy(dtype=float) == 1, ["cleanlab.label_quality"],
                           "dynamics.suggested_label", "cleanlab.is_issue = 1 (confident learning's per-class thresholds)",
                           f"out-of-sample probabilities: {oos_model} (cleanlab)")))
    if clip_fit and {"clip.zero_shot_margin", "clip.suggested_label"} <= set(frame.columns):
        margin = frame["clip.zero_shot_margin"].to_numpy(dtype=float)
        mask = (frame["clip.suggested_label"].astype(str).to_numpy() != labels) & (margin >= config.mislabel_margin)
        rules.append((None, rule(mask, ["clip.label_alignment"], "clip.suggested_label",
                                 f"zero-shot top-1 ≠ label and clip.zero_shot_margin ≥ {config.mislabel_margin:g}",
                                 "CLIP zero-shot (a model that never saw these labels)", config.mislabel_margin)))
    if {NOISE_SCORE, NOISE_SUGGESTION} <= set(frame.columns):
        rules.append((proxy_fits(frame, config=config.fitness), _posterior_rule(frame, config)))
    elif {"dynamics.predicted_label", "dynamics.aum", "dynamics.final_loss"} <= set(frame.columns):
        rules.append((proxy_fits(frame, config=config.fitness),
                      rule(frame["dynamics.predicted_label"].astype(str).to_numpy() != labels,
                           ["dynamics.aum", "dynamics.final_loss"], "dynamics.predicted_label",
                           "the proxy's last-epoch prediction (dynamics.predicted_label) ≠ label",
                           "training dynamics of the proxy (in-sample: it trained on these labels)")))
    return rules


POSTERIOR_COUNT_ERROR = 0.20
"""Relative error of the noise posterior's expected count of mislabels among its flagged samples, the largest seen on
all 50,000 CIFAR-10 images (asym40 and confusable30 at the ladder's rungs from 16 px / 6 epochs to 32 px / 8 epochs,
sym20 and sym40 at 24 px / 8: -8 % to +20 %, the weakest proxy overcounting; docs/benchmarks.md, "Noise detectors on
class-dependent noise"): added to the interval as the model's own error, which the Poisson-binomial variance of a
correct model leaves out."""


def _posterior_rule(frame: pd.DataFrame, config: OverviewConfig) -> _Build:
    """Likely mislabelled by the noise posterior: each flagged sample carries its own probability of a wrong label."""
    wrong = frame[NOISE_SCORE].to_numpy(dtype=float)
    mask = wrong >= config.noise_posterior_cut
    rule = f"{NOISE_SCORE} ≥ {config.noise_posterior_cut:g} (the probability that the label is wrong)"
    evidence = "training dynamics of the proxy, corrected for the class confusion the labels show (noise posterior)"

    def build(unfit: Optional[FitnessReport]) -> Mislabels:
        if unfit is not None:
            return _uncalibrated(Mislabels(mask, NOISE_SCORE, NOISE_SUGGESTION, rule, config.noise_posterior_cut,
                                           evidence=evidence), unfit)
        count = float(wrong[mask].sum())
        est = estimates.from_probabilities(
            wrong[mask], extra_variance=(POSTERIOR_COUNT_ERROR * count) ** 2,
            source=f"the noise posterior's own probabilities, ± {POSTERIOR_COUNT_ERROR:.0%} for its measured error; "
                   "no verdicts yet")
        prob = np.where(mask, wrong, 0.0)
        return Mislabels(mask, NOISE_SCORE, NOISE_SUGGESTION, rule, config.noise_posterior_cut, prob, est, evidence)
    return build


def mislabels(frame: pd.DataFrame, config: OverviewConfig = OverviewConfig(), *,
              clip_fit: bool = True, oos_model: str = CROSS_FITTED_PROXY) -> Optional[Mislabels]:
    """Likely mislabelled samples from the best evidence the table has, with the model's estimate of true ones.

    In order of preference: cleanlab's issues when cross-fitting ran (out-of-sample); CLIP's
    zero-shot rule when the model fits the data (``clip_fit``, checked by the caller); the proxy's
    last-epoch prediction (``dynamics.predicted_label``), which dynamics without cross-fitting still
    records.  The first rule whose model passes its fitness check is calibrated; when none passes,
    the first one's flags are shown as a raw count whose source quotes the failed check.  ``oos_model``
    names whose out-of-sample probabilities the ``cleanlab.*`` columns are (:func:`out_of_sample_model`).
    """
    rules = _rules(frame, config, clip_fit, oos_model)
    for fit, build in rules:
        if fit is None or fit.fits:
            return build(None)
    return rules[0][1](rules[0][0]) if rules else None


def audit_tag(kind: str) -> str:
    """The DecisionStore tag that marks a finding's random audit picks."""
    return f"{AUDIT_TAG_PREFIX}{kind}"


def audit_sample(finding: Finding, frame: pd.DataFrame, decisions: pd.Series, n: int, *,
                 already: Collection[str] = (), seed: Optional[int] = None) -> list[str]:
    """``n`` paths drawn uniformly at random from the finding's undecided members not audited yet.

    Uniform over the undecided members, so the verdicts on them are an unbiased sample of what is
    still open in the finding (with the earlier audit picks, of the whole finding as long as no
    ranked review has decided members first).
    """
    rows = finding.rows[(decisions.reindex(finding.rows).fillna(UNDECIDED) == UNDECIDED).to_numpy()]
    paths = frame.loc[rows, "path"].astype(str)
    pool = paths[~paths.isin(set(already))].to_numpy()
    rng = np.random.default_rng(seed)
    return [str(p) for p in rng.choice(pool, min(n, len(pool)), replace=False)] if len(pool) else []


def audit_estimate(finding: Finding, frame: pd.DataFrame, decisions: pd.Series, audited: Collection[str]
                   ) -> Optional[Estimate]:
    """The finding's precision from reviewer verdicts on its random audit picks only; None before any verdict."""
    member = frame.loc[finding.rows]
    picked = member["path"].astype(str).isin(set(audited)).to_numpy()
    verdicts = decisions.reindex(member.index).fillna(UNDECIDED).to_numpy()[picked]
    verdicts = verdicts[verdicts != UNDECIDED]
    if not len(verdicts):
        return None
    hits = int(np.isin(verdicts, PROBLEM_ACTIONS).sum())
    return Estimate.from_verdicts(finding.count, hits, len(verdicts),
                                  source=f"reviewer verdicts on {len(verdicts)} random audit picks")


def _finding(kind: str, title: str, score: str, rule: str, mask: np.ndarray, frame: pd.DataFrame,
             undecided: np.ndarray, groups: Optional[int] = None, threshold: Optional[float] = None) -> Finding:
    return Finding(kind, title, score, rule, frame.index[mask].to_numpy(), int(mask.sum()),
                   int((mask & undecided).sum()), groups, threshold)


def _z_finding(kind: str, title: str, col: str, frame: pd.DataFrame, infos: Mapping[str, ScoreInfo], z: float,
               undecided: np.ndarray, note: str = "") -> Optional[Finding]:
    """Samples whose ``col`` is more than ``z`` robust sigmas to its suspicious side (``note`` ends the rule)."""
    if col not in frame or col not in infos:
        return None
    values = frame[col].to_numpy(dtype=float)
    side = infos[col].suspicious
    cut = robust_threshold(values, side, z)
    mask = values > cut if side == "high" else values < cut
    rule = f"{col} {'>' if side == 'high' else '<'} {cut:.3f} (robust z {'>' if side == 'high' else '<'} " \
           f"{'' if side == 'high' else '-'}{z:g}{note})"
    return _finding(kind, title, col, rule, mask, frame, undecided, threshold=cut)


def class_quality(frame: pd.DataFrame, mis: Optional[Mislabels]) -> pd.DataFrame:
    """Per given label: samples, flagged, estimated true mislabels and label quality = 1 - estimated / samples.

    The estimate is the sum of the flagged rows' probability of being mislabelled (the finding's own
    model), so a rule that flags many samples it cannot tell apart does not read as bad labels.
    Without any label evidence (no mislabel detector ran, or it has no estimate) ``estimated`` and
    ``label_quality`` are NaN: unknown, never a 100 % no evidence could support.
    """
    labels = frame["label"].astype(str)
    flagged = mis.mask if mis is not None else np.zeros(len(frame), dtype=bool)
    table = pd.DataFrame({"samples": labels.value_counts(),
                          "flagged": labels[flagged].value_counts()}).fillna(0).astype(int)
    if mis is not None and mis.problem_prob is not None:
        table["estimated"] = pd.Series(mis.problem_prob, index=labels.index).groupby(labels.to_numpy()).sum()
        table["label_quality"] = 1.0 - table["estimated"] / table["samples"]
    else:
        table["estimated"] = np.nan
        table["label_quality"] = np.nan
    table.index.name = "label"
    return table.sort_values(["label_quality", "samples"], ascending=[True, False], na_position="last")


def flip_matrix(frame: pd.DataFrame, rows: np.ndarray, suggested: str) -> pd.DataFrame:
    """Counts of ``rows`` by given label (index) x suggested label (columns), zeros kept out of the sum."""
    sub = frame.loc[rows]
    if not len(sub):
        return pd.DataFrame(dtype=int)
    return pd.crosstab(sub["label"].astype(str).rename("given"), sub[suggested].astype(str).rename("suggested"))


def flip_rows(frame: pd.DataFrame, rows: np.ndarray, suggested: str, given: str, to: str) -> np.ndarray:
    """The rows among ``rows`` labelled ``given`` for which the detector suggests ``to`` (one flip cell)."""
    sub = frame.loc[rows]
    hit = (sub["label"].astype(str) == given).to_numpy() & (sub[suggested].astype(str) == to).to_numpy()
    return sub.index[hit].to_numpy()


def overview(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    *,
    decisions: Optional[pd.Series] = None,
    skipped: Optional[Mapping[str, int]] = None,
    scoring: Optional[Mapping[str, Any]] = None,
    audited: Optional[Mapping[str, Collection[str]]] = None,
    config: OverviewConfig = OverviewConfig(),
) -> Overview:
    """The health summary of a scored dataset.

    ``decisions`` (aligned with ``frame``; "undecided" where none) makes each finding count its
    still-open samples and restricts the flip matrix to them, so reviewing shrinks the numbers.
    ``skipped`` is the loader's count of unreadable files per kind (they have no row);
    ``scoring`` the score table's settings (``ScoreTable.settings``): the rules quote the k of the
    k-NN scores and the cosine the duplicate groups were found at from its ``"clip"`` entry, and the
    report carries it whole.  ``audited`` maps a finding's kind to the paths drawn as its random
    audit picks (:func:`audit_sample`; the ``audit:<kind>`` tags): verdicts on those, and only
    those, replace the model's estimate.
    """
    scoring = dict(scoring or {})
    clip = dict(scoring.get("clip") or {})
    dup_threshold, k = clip.get("dup_threshold"), clip.get("k")
    decisions = (pd.Series(UNDECIDED, index=frame.index) if decisions is None
                 else decisions.reindex(frame.index).fillna(UNDECIDED))
    undecided = (decisions == UNDECIDED).to_numpy()
    evidence: list[str] = []
    fit = clip_fitness(frame, config)
    clip_ok = fit is None or fit.fits
    if fit is not None and not fit.fits:
        evidence.append(f"{fit.verdict} Its scores stay on the Score and Explore pages; no finding uses them.")
    findings: list[Finding] = []
    oos_model = out_of_sample_model(scoring)
    mis = mislabels(frame, config, clip_fit=clip_ok, oos_model=oos_model)
    if mis is not None:
        findings.append(replace(_finding("mislabelled", "Likely mislabelled", mis.score, mis.rule, mis.mask, frame,
                                         undecided, threshold=mis.threshold),
                                estimate=mis.estimate, evidence=mis.evidence))
    if clip_ok:
        findings += _clip_findings(frame, infos, undecided, k, dup_threshold, config)
    findings += image_quality_findings(frame, scoring.get("image"), undecided)
    if skipped is not None:
        n = int(sum(skipped.values()))
        rule = ", ".join(f"{v:,} {k}" for k, v in skipped.items()) or "none"
        findings.append(Finding("unreadable", "Unreadable or skipped files", "dataset validation", rule,
                                np.zeros(0, dtype=np.int64), n, n,
                                estimate=estimates.exact(n, "exact: the loader could not read them"),
                                evidence="the dataset loader"))
    findings = [_with_verdicts(f, frame, decisions, (audited or {}).get(f.kind)) for f in findings]
    evidence += _missing_evidence(frame, mis, config, oos_model)
    note = cleanlab_count_note(scoring)
    if note is not None:
        evidence.append(note)
    flagged = mis.mask if mis is not None else np.zeros(len(frame), dtype=bool)
    flips = (flip_matrix(frame, frame.index[flagged & undecided].to_numpy(), mis.suggested)
             if mis is not None else pd.DataFrame(dtype=int))
    settings = {"thresholds": asdict(config), "scoring": scoring}
    return Overview(len(frame), findings, class_quality(frame, mis), flips, mis, settings, fit, evidence)


def clip_fitness(frame: pd.DataFrame, config: OverviewConfig = OverviewConfig()) -> Optional[FitnessReport]:
    """CLIP's fitness (:func:`fitness.clip_fits`), its ceiling set by the label-noise estimate of the
    dynamics (cleanlab's where cross-fitting ran) where there is one; what the Score page and the Overview show."""
    if "clip.suggested_label" not in frame:
        return None
    dyn = mislabels(frame, replace(config, mixture_boots=0), clip_fit=False)  # point estimate only
    if dyn is None or dyn.estimate is None or np.isnan(dyn.estimate.precision):
        return clip_fits(frame, config=config.fitness)
    return clip_fits(frame, noise_rate=dyn.estimate.count / len(frame),
                     noise_source=f"{dyn.estimate.count / len(frame):.1%} wrong labels estimated from {dyn.evidence}",
                     config=config.fitness)


def _clip_findings(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo], undecided: np.ndarray, k: Any,
                   dup_threshold: Any, config: OverviewConfig) -> list[Finding]:
    """Outliers, near-duplicates and caption mismatches from the CLIP embeddings (a model that fits the data)."""
    found: list[Finding] = []
    no_model = "no model of this rule's precision: audit a random sample"
    outliers = _z_finding("outliers", "Outliers", "clip.outlier", frame, infos, config.outlier_z, undecided,
                          f"; mean distance to k = {k} neighbours" if k is not None else "")
    if outliers is not None:
        found.append(replace(outliers, estimate=estimates.uncalibrated(outliers.count, no_model),
                             evidence="CLIP image embeddings (k-NN distances)"))
    if "clip.duplicate_group" in frame:
        group = frame["clip.duplicate_group"].fillna(-1).to_numpy(dtype=np.int64)
        mask = group >= 0
        at = f"{dup_threshold:g}" if dup_threshold is not None else "the scoring's duplicate threshold"
        dup = _finding("duplicates", "Near-duplicate groups", "clip.duplicate_group",
                       f"image cosine ≥ {at} to another member", mask, frame,
                       undecided, groups=int(len(np.unique(group[mask]))), threshold=dup_threshold)
        found.append(replace(dup, estimate=estimates.uncalibrated(dup.count, no_model),
                             evidence="CLIP image embeddings (cosine)"))
    captions = _z_finding("caption mismatch", "Caption mismatches", "clip.caption_alignment", frame, infos,
                          config.caption_z, undecided)
    if captions is not None:
        # flagged captions are mismatched ones (cosine of an image with a random caption) or the low
        # tail of matched ones: a mixture of the two over the flagged, as for the mislabel rules
        est, _ = estimates.mixture_estimate(
            frame.loc[captions.rows, "clip.caption_alignment"].to_numpy(dtype=float), boots=config.mixture_boots,
            source="two-component mixture of clip.caption_alignment over the flagged samples (no verdicts yet)")
        found.append(replace(captions, estimate=est, evidence="CLIP image and caption embeddings"))
    return found


def image_quality_findings(frame: pd.DataFrame, image: Optional[Mapping[str, Any]], undecided: np.ndarray
                           ) -> list[Finding]:
    """One finding per image-quality issue type the table scored: ``image.<issue> < threshold``.

    The thresholds are the ones the scores were made with (``settings["image"]["thresholds"]``, what
    CleanVision itself flagged by), else ``QualityConfig``'s defaults.  A flag is an exact pixel
    statistic, but whether a dark or blurry image is a *problem* for the task is not: like outliers, the
    estimate is the raw count with precision [0, 1] until a random audit is reviewed.
    """
    from pruning_core.image_quality import ISSUE_TEXT, SCORED_HERE, QualityConfig, column, flagged

    image = dict(image or {})
    thresholds = {**QualityConfig().thresholds(), **dict(image.get("thresholds") or {})}
    made_by = image.get("library", "CleanVision")
    found = []
    for issue, (title, _) in ISSUE_TEXT.items():
        if column(issue) not in frame:
            continue
        cut = float(thresholds[issue])
        by = f"PruneScope on {made_by}'s edge statistic" if issue in SCORED_HERE else made_by
        finding = _finding(title.lower(), title, column(issue), f"{column(issue)} < {cut:g} ({by})",
                           flagged(frame, issue, cut), frame, undecided, threshold=cut)
        found.append(replace(finding, estimate=estimates.uncalibrated(
            finding.count, "a pixel statistic, not a model of the problem: audit a random sample"),
            evidence=f"image pixels ({by})"))
    return found


def _with_verdicts(finding: Finding, frame: pd.DataFrame, decisions: pd.Series,
                   audited: Optional[Collection[str]]) -> Finding:
    """The finding with its audit verdicts' estimate where there are any (they outrank any model)."""
    if not audited or finding.kind == "unreadable":
        return finding
    est = audit_estimate(finding, frame, decisions, audited)
    return finding if est is None else replace(finding, estimate=est)


def _missing_evidence(frame: pd.DataFrame, mis: Optional[Mislabels], config: OverviewConfig,
                      oos_model: str) -> list[str]:
    """Sentences naming the label evidence the table lacks (or could not use) and how to get it."""
    notes = []
    has_dynamics = any(c.startswith("dynamics.") for c in frame.columns)
    if "cleanlab.is_issue" not in frame:
        notes.append(NO_OOS if has_dynamics else
                     "no training dynamics: score with dynamics (and cross-fitting) for label evidence "
                     "that does not depend on CLIP")
    elif mis is not None and mis.suggested != "dynamics.suggested_label":
        oos = proxy_fits(frame, predicted="dynamics.suggested_label", model=oos_model, config=config.fitness)
        notes.append(f"cleanlab's flags are not used: {oos.verdict}")
    if mis is None:
        notes.append("no label evidence: label quality per class is unknown until CLIP zero-shot "
                     "(a fitting model) or training dynamics are scored")
    else:
        notes.append(f"likely mislabelled rests on {mis.evidence}")
    return notes


def report_dict(ov: Overview) -> dict:
    """The overview's numbers as plain JSON-able data (no sample lists), with the settings they depend on."""
    quality = []
    for label, row in ov.class_quality.iterrows():
        entry = {"label": str(label), "samples": int(row["samples"]), "flagged": int(row["flagged"])}
        for name in ("estimated", "label_quality"):
            entry[name] = None if pd.isna(row[name]) else round(float(row[name]), 4)
        quality.append(entry)
    return {
        "samples": ov.n_samples,
        "settings": ov.settings,
        "findings": [f.summary() for f in ov.findings],
        "fitness": ov.fitness.summary() if ov.fitness is not None else None,
        "evidence": list(ov.evidence),
        "class_quality": quality,
        "flips": [{"given": str(g), "suggested": str(s), "open": int(n)}
                  for (g, s), n in ov.flips.stack().items() if n > 0] if not ov.flips.empty else [],
    }


def report_json(ov: Overview) -> str:
    return json.dumps(report_dict(ov), indent=2, default=str)


def estimate_text(est: Optional[Estimate]) -> str:
    """``≈ 236 true (90 % interval 211–262; precision 50 % [45–55 %])``, or the raw count when uncalibrated."""
    if est is None:
        return "raw count"
    if np.isnan(est.precision):
        return f"raw count; precision unknown [0–100 %] ({est.source})"
    lo, hi = est.count_interval
    level = f"{est.level:.0%}"
    if est.low == est.high:
        return f"{est.count:,.0f} true ({est.source})"
    return (f"≈ {est.count:,.0f} true ({level} interval {lo:,.0f}–{hi:,.0f}; precision {est.precision:.0%} "
            f"[{est.low:.0%}–{est.high:.0%}]; {est.source})")


def report_markdown(ov: Overview, name: str = "dataset") -> str:
    """A short human-readable report: findings with their estimates and rules, per-class quality, the top flips."""
    data = report_dict(ov)
    lines = [f"# PruneScope overview: {name}", "", f"{ov.n_samples:,} samples.", "",
             "| finding | flagged | open | estimated true problems | flagged by |", "|---|---:|---:|---|---|"]
    for f in ov.findings:
        title = f.title + (f" ({f.groups:,} groups)" if f.groups is not None else "")
        lines.append(f"| {title} | {f.count:,} | {f.open:,} | {estimate_text(f.estimate)} | {f.rule} |")
    if ov.fitness is not None:
        lines += ["", f"**Model fitness.** {ov.fitness.verdict}"]
    if ov.evidence:
        lines += ["", "## Evidence", ""] + [f"- {note}" for note in ov.evidence]
    lines += ["", "## Label quality per class", "",
              "| class | samples | flagged | estimated mislabelled | label quality |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c['label']} | {c['samples']:,} | {c['flagged']:,} | "
              f"{'unknown' if c['estimated'] is None else format(c['estimated'], ',.1f')} | "
              f"{'unknown' if c['label_quality'] is None else format(c['label_quality'], '.1%')} |"
              for c in data["class_quality"]]
    flips = sorted(data["flips"], key=lambda x: -x["open"])[:20]
    if flips:
        lines += ["", "## Most frequent class flips (open, raw counts)", "", "| given | suggested | samples |",
                  "|---|---|---:|"]
        lines += [f"| {x['given']} | {x['suggested']} | {x['open']:,} |" for x in flips]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in flat_settings(ov.settings)]
    return "\n".join(lines) + "\n"


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings as ``(dotted.name, value)`` rows, in order: the settings tables of the Markdown and HTML
    reports (``audit.report``) read the one flattening."""
    rows: list[tuple[str, Any]] = []
    for name, value in settings.items():
        if isinstance(value, Mapping):
            rows += flat_settings(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", value))
    return rows
