"""How sure a count is: binomial intervals for the precision of a flagged set, and the estimate they give.

One function for every interval the app shows (a finding's precision from reviewer verdicts, the
learning queue's "precision of the next 50", a calibrated rule), so the same evidence always gives
the same interval.

Why Jeffreys: the interval of a Beta(1/2, 1/2) prior's posterior has close to nominal frequentist
coverage for small n and for proportions near 0 or 1 (Brown, Cai & DasGupta 2001, "Interval
estimation for a binomial proportion"), where the Wald interval collapses to a point (0 of 20
confirmed gives [0, 0]) and Clopper–Pearson is needlessly wide.  By convention the bound is 0
(or 1) when no (or every) trial succeeded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from scipy.stats import beta, norm

DEFAULT_LEVEL = 0.9
"""Two-sided coverage of every interval PruneScope shows."""


def precision_interval(hits: int, n: int, *, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Jeffreys interval for a proportion: ``hits`` confirmed problems among ``n`` checked samples.

    ``n == 0`` (nothing checked) gives the uninformative ``(0.0, 1.0)``.
    """
    if not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n == 0:
        return 0.0, 1.0
    tail = (1.0 - level) / 2.0
    lo = 0.0 if hits == 0 else float(beta.ppf(tail, hits + 0.5, n - hits + 0.5))
    hi = 1.0 if hits == n else float(beta.ppf(1.0 - tail, hits + 0.5, n - hits + 0.5))
    return lo, hi


@dataclass(frozen=True)
class Estimate:
    """An estimated number of true problems among ``flagged`` samples, with the precision behind it.

    ``source`` says where the precision comes from in words a user reads ("reviewer verdicts on 40
    random picks", "cleanlab confident joint", ...); ``checked`` is the number of samples the
    interval rests on (0 when it comes from a model rather than from verdicts).
    """

    flagged: int
    precision: float
    low: float
    high: float
    source: str
    checked: int = 0
    level: float = DEFAULT_LEVEL

    @property
    def count(self) -> float:
        """Estimated true problems among the flagged samples."""
        return self.flagged * self.precision

    @property
    def count_interval(self) -> tuple[float, float]:
        return self.flagged * self.low, self.flagged * self.high

    @classmethod
    def from_verdicts(cls, flagged: int, hits: int, checked: int, *, source: str,
                      level: float = DEFAULT_LEVEL) -> "Estimate":
        """Precision from ``checked`` verdicts of which ``hits`` confirmed a problem.

        The verdicts must be an unbiased sample of the flagged set (random picks, not the top of a
        ranking), or the interval describes the checked samples rather than the finding.
        """
        lo, hi = precision_interval(hits, checked, level=level)
        point = (hits + 0.5) / (checked + 1.0)  # the Jeffreys posterior mean: defined at 0 and n
        return cls(flagged, point, lo, hi, source, checked, level)

    def summary(self) -> dict:
        """JSON-able numbers for reports."""
        lo, hi = self.count_interval
        if np.isnan(self.precision):  # uncalibrated: only the raw count and the [0, 1] precision bounds are known
            return {"flagged": self.flagged, "estimated": None, "estimated_low": 0.0, "estimated_high": float(self.flagged),
                    "precision": None, "precision_low": 0.0, "precision_high": 1.0, "level": self.level,
                    "checked": self.checked, "source": self.source}
        return {"flagged": self.flagged, "estimated": round(self.count, 1), "estimated_low": round(lo, 1),
                "estimated_high": round(hi, 1), "precision": round(self.precision, 4),
                "precision_low": round(self.low, 4), "precision_high": round(self.high, 4),
                "level": self.level, "checked": self.checked, "source": self.source}


def normal_interval(count: float, variance: float, flagged: int, *, level: float = DEFAULT_LEVEL
                    ) -> tuple[float, float]:
    """Precision bounds of an estimated ``count`` of true problems among ``flagged`` with ``variance``.

    A normal interval on the count (a sum of many per-sample probabilities is close to normal),
    clipped to ``[0, flagged]`` and divided by ``flagged``.
    """
    if flagged <= 0:
        return 0.0, 1.0
    half = float(norm.ppf(0.5 + level / 2.0)) * float(np.sqrt(max(variance, 0.0)))
    return max(0.0, count - half) / flagged, min(float(flagged), count + half) / flagged


def from_probabilities(problem_prob: np.ndarray, *, source: str, extra_variance: float = 0.0,
                       level: float = DEFAULT_LEVEL) -> Estimate:
    """The estimate of a flagged set whose members each carry a calibrated probability of being a problem.

    The expected number of true problems is ``sum(q)``; if the ``q`` are right, the true count is a
    sum of independent Bernoulli(q_i) draws (Poisson-binomial) with variance ``sum(q (1 - q))``.
    ``extra_variance`` adds the uncertainty of the model that produced ``q`` (e.g. the bootstrap
    variance of a fitted mixture's ``sum(q)``).
    """
    q = np.clip(np.asarray(problem_prob, dtype=float), 0.0, 1.0)
    flagged = int(q.size)
    count = float(q.sum())
    lo, hi = normal_interval(count, float((q * (1.0 - q)).sum()) + extra_variance, flagged, level=level)
    return Estimate(flagged, count / flagged if flagged else float("nan"), lo, hi, source, 0, level)


def uncalibrated(flagged: int, source: str, *, level: float = DEFAULT_LEVEL) -> Estimate:
    """A raw count with no evidence on its precision: the honest interval is all of ``[0, 1]``."""
    return Estimate(flagged, float("nan"), 0.0, 1.0, source, 0, level)


def exact(flagged: int, source: str, *, level: float = DEFAULT_LEVEL) -> Estimate:
    """A count that is its own truth (an unreadable file is a problem by definition): precision 1."""
    return Estimate(flagged, 1.0, 1.0, 1.0, source, 0, level)


MIXTURE_MIN_VALUES = 10
"""Fewer flagged values than this do not support a two-component fit."""


def _log_densities(x: np.ndarray, weight: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(N, 2) log of weight x normal density (the shared constant left out)."""
    return -0.5 * ((x[:, None] - mean) / sd) ** 2 - np.log(sd) + np.log(weight)


def _problem_posterior(x: np.ndarray, params: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    log_p = _log_densities(x, *params)
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return p[:, int(np.argmin(params[1]))] / p.sum(axis=1)


MIXTURE_BINS = 256
"""Histogram bins EM runs on: a 1-D fit costs the same for 500 or 500,000 values, and a bootstrap resample
is a multinomial draw of the bin counts (bins 1/256 of the range wide: the demo's estimates move by < 0.5 %)."""


def _histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts, edges = np.histogram(x, bins=MIXTURE_BINS)
    return (edges[:-1] + edges[1:]) / 2.0, counts.astype(float)


def fit_two_gaussians(values: np.ndarray, *, counts: Optional[np.ndarray] = None, max_iter: int = 300,
                      tol: float = 1e-7) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(weights, means, sds) of a two-component 1-D Gaussian mixture fitted by EM; None without enough values.

    ``values`` with ``counts`` are weighted points (histogram centres); without ``counts`` the
    values are binned first (``MIXTURE_BINS``).  Deterministic (started at the 10th and 90th
    percentiles, so no seed).  Fewer than ``MIXTURE_MIN_VALUES`` values, or no spread, support no fit.
    """
    x = np.asarray(values, dtype=float)
    if counts is None:
        if len(x) < MIXTURE_MIN_VALUES or float(np.ptp(x)) <= 0.0:
            return None
        x, counts = _histogram(x)
    w = np.asarray(counts, dtype=float)
    total_n = float(w.sum())
    mean_all = float((w * x).sum() / total_n)
    spread = float(np.sqrt((w * (x - mean_all) ** 2).sum() / total_n))
    if total_n < MIXTURE_MIN_VALUES or spread <= 0.0:
        return None
    cdf = np.cumsum(w) / total_n
    mean = x[np.searchsorted(cdf, [0.1, 0.9])]
    sd = np.full(2, spread / 2.0)
    weight = np.full(2, 0.5)
    floor = 1e-3 * spread  # keeps a component from collapsing onto one bin
    previous = -np.inf
    for _ in range(max_iter):
        log_p = _log_densities(x, weight, mean, sd)
        top = log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p - top)
        total = p.sum(axis=1, keepdims=True)
        resp = p / total * w[:, None]
        loglik = float((w * (np.log(total[:, 0]) + top[:, 0])).sum())
        n_k = resp.sum(axis=0) + 1e-12
        weight = n_k / total_n
        mean = (resp * x[:, None]).sum(axis=0) / n_k
        sd = np.sqrt((resp * (x[:, None] - mean) ** 2).sum(axis=0) / n_k) + floor
        if loglik - previous <= tol * abs(loglik):
            break
        previous = loglik
    return weight, mean, sd


_MIXTURE_MEMO: "OrderedDict[tuple, tuple[Estimate, Optional[np.ndarray]]]" = OrderedDict()
MIXTURE_MEMO_SIZE = 32
"""Mixture estimates kept in memory by their values' digest: the Overview recomputes after every review
decision, which changes open counts but not the scores the mixtures are fitted to."""


def mixture_estimate(values: np.ndarray, *, source: str, boots: int = 30, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> tuple[Estimate, Optional[np.ndarray]]:
    """:func:`_mixture_estimate`, remembered for the last ``MIXTURE_MEMO_SIZE`` distinct inputs."""
    x = np.ascontiguousarray(values, dtype=float)
    key = (hashlib.sha1(x.tobytes()).hexdigest(), len(x), source, boots, seed, level)
    if key not in _MIXTURE_MEMO:
        _MIXTURE_MEMO[key] = _mixture_estimate(x, source=source, boots=boots, seed=seed, level=level)
        while len(_MIXTURE_MEMO) > MIXTURE_MEMO_SIZE:
            _MIXTURE_MEMO.popitem(last=False)
    _MIXTURE_MEMO.move_to_end(key)
    est, q = _MIXTURE_MEMO[key]
    return est, None if q is None else q.copy()


def _mixture_estimate(values: np.ndarray, *, source: str, boots: int, seed: int,
                      level: float) -> tuple[Estimate, Optional[np.ndarray]]:
    """The estimate of a flagged set from a two-component mixture of one score over its members.

    A rule's flagged set holds two kinds of members, true problems and samples the rule gets wrong,
    whose scores differ (see each caller).  The mixture's posterior of the lower component is each
    member's probability of being a true problem (:func:`from_probabilities`).  Refitting on
    ``boots`` bootstrap resamples (seeded multinomial draws of the binned values) and scoring the original members measures how much that
    sum moves with the sample the mixture was fitted on; its variance is added to the
    Poisson-binomial one.  Returns the estimate and the per-member probabilities (for per-class sums);
    too few values (or no spread) support no fit: then the estimate is :func:`uncalibrated` and the
    probabilities None.
    """
    x = np.asarray(values, dtype=float)
    params = fit_two_gaussians(x)
    if params is None:
        return uncalibrated(len(x), f"{source}: {len(x)} flagged values are too few to fit a mixture; "
                                    "audit a random sample", level=level), None
    q = _problem_posterior(x, params)
    centres, counts = _histogram(x)
    rng = np.random.default_rng(seed)
    fits = [fit_two_gaussians(centres, counts=rng.multinomial(len(x), counts / counts.sum())) for _ in range(boots)]
    sums = [float(_problem_posterior(x, fit).sum()) for fit in fits if fit is not None]
    extra = float(np.var(sums)) if len(sums) > 1 else 0.0
    return from_probabilities(q, source=source, extra_variance=extra, level=level), q


def span(parts: list[Estimate], *, source: str) -> Estimate:
    """One estimate from several models of the same flagged set that disagree: the midpoint and the union of intervals.

    Two reasonable calibrations of one rule (a mixture of two different scores) differ by how wrong
    each model's shape is; no single bootstrap sees that.  Spanning both intervals keeps that
    disagreement in the interval instead of picking the more convenient model.
    """
    if len(parts) == 1:
        return replace(parts[0], source=source)
    flagged = parts[0].flagged
    point = float(np.mean([p.precision for p in parts]))
    return Estimate(flagged, point, min(p.low for p in parts), max(p.high for p in parts), source, 0, parts[0].level)
