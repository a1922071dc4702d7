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

from dataclasses import dataclass

from scipy.stats import beta

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
        return {"flagged": self.flagged, "estimated": round(self.count, 1), "estimated_low": round(lo, 1),
                "estimated_high": round(hi, 1), "precision": round(self.precision, 4),
                "precision_low": round(self.low, 4), "precision_high": round(self.high, 4),
                "level": self.level, "checked": self.checked, "source": self.source}
