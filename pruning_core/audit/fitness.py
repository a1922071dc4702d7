"""Does a model know this data?  Measured on the user's own labels before its scores feed findings.

A zero-shot classifier that does not know the classes (a tiny model on real photos, a photo model
on X-rays) disagrees with the given labels about as often as a coin with C sides, and then every
CLIP finding (mislabels, outliers, duplicates, caption mismatches) is noise with a confident face.
The check compares the zero-shot top-1's agreement with the given labels against two anchors:

* chance, ``1 / C`` (a model that knows nothing agrees that often with any labelling);
* the ceiling ``1 - noise``: a model that knows the data perfectly still disagrees with the wrong
  labels, whose share the training-dynamics finding estimates (0 when none was computed).

``skill = (agreement - 1/C) / (ceiling - 1/C)`` is the share of the way from chance to the ceiling
(Cohen's-kappa-like: 0 at chance, 1 for a perfect model).  The spread of label alignment says the
same thing another way: the median cosine of images to their own label's prompt among samples
the model agrees with, minus that among samples it disagrees with, in robust sigmas of all
alignments; a model that knows the classes separates the two groups clearly.

The verdict is "does not fit" only when the evidence says so: when even the upper end of the
agreement's 90 % interval (``estimates.precision_interval``) gives a skill below
``FitnessConfig.min_skill``, or the alignment gap is below ``min_alignment_gap``.  A dozen samples
cannot condemn a model; three thousand at chance do.  Then its scores stay in the table for
inspection, and the Overview leaves every CLIP finding out and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

from pruning_core.audit.estimates import precision_interval


@dataclass(frozen=True)
class FitnessConfig:
    """Where a CLIP model stops fitting the data (defaults live here only)."""

    min_skill: float = 0.5
    """Least share of the way from chance agreement (1/C) to the ceiling (1 - estimated noise)."""
    min_alignment_gap: float = 1.0
    """Least gap, in robust sigmas, between the label alignment of samples the model agrees and disagrees with."""
    min_proxy_skill: float = 0.4
    """Least skill of the dynamics proxy's last-epoch prediction before its scores calibrate the mislabel finding
    (CIFAR-10 folder, docs/benchmarks.md: 2 epochs gave 0.13 and a mixture 1.9x the truth; 8 epochs 0.55, within 10 %)."""


@dataclass(frozen=True)
class FitnessReport:
    """The numbers behind a fitness verdict, for the Score page, the Overview and the report."""

    model: str
    """"CLIP" or "the dynamics proxy"."""
    min_skill: float
    classes: int
    samples: int
    agreement: float
    """Share of samples whose zero-shot top-1 is the given label."""
    chance: float
    noise_rate: float
    """Estimated share of wrong labels the ceiling allows for (0 when no estimate was available)."""
    noise_source: str
    skill: float
    skill_high: float
    """The skill at the upper end of the agreement's 90 % interval: what the verdict tests."""
    alignment_gap: float
    """(median alignment where it agrees - median where it disagrees) / robust sigma of all; NaN without alignments."""
    fits: bool
    config: FitnessConfig

    @property
    def verdict(self) -> str:
        """One sentence with the numbers, for a page or a report."""
        head = f"{self.model} fits this data" if self.fits else f"{self.model} does not fit this data"
        gap = "" if np.isnan(self.alignment_gap) else f", label-alignment gap {self.alignment_gap:.2f} σ " \
                                                       f"(needs ≥ {self.config.min_alignment_gap:g})"
        return (f"{head}: its top-1 agrees with {self.agreement:.1%} of the labels (chance {self.chance:.1%}, "
                f"ceiling {1 - self.noise_rate:.1%} with {self.noise_source}), skill {self.skill:.2f} "
                f"(at most {self.skill_high:.2f} at 90 %; needs ≥ {self.min_skill:g}){gap}.")

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "config"}
        out = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}
        return {**out, "verdict": self.verdict, "thresholds": asdict(self.config)}


def clip_fits(frame: pd.DataFrame, *, noise_rate: Optional[float] = None, noise_source: str = "",
              config: FitnessConfig = FitnessConfig()) -> Optional[FitnessReport]:
    """How well CLIP's zero-shot knows the classes of ``frame``; None when it has no zero-shot columns.

    ``noise_rate`` is the share of wrong labels estimated from other evidence (the dynamics finding);
    without it the ceiling is 1 and the skill is a lower bound.  The Review queue's default and the
    duplicate groups consult the same verdict.
    """
    return _fits(frame, "CLIP", "clip.suggested_label", "clip.label_alignment", config.min_skill, config,
                 noise_rate, noise_source)


def proxy_fits(frame: pd.DataFrame, *, predicted: str = "dynamics.predicted_label", model: str = "the dynamics proxy",
               config: FitnessConfig = FitnessConfig()) -> Optional[FitnessReport]:
    """How well a proxy learned the classes: its prediction column against the labels; None without it.

    ``dynamics.predicted_label`` (in-sample, last epoch) or ``dynamics.suggested_label`` (the
    cross-fitted, out-of-sample argmax cleanlab ranks by).
    """
    return _fits(frame, model, predicted, None, config.min_proxy_skill, config)


def _fits(frame: pd.DataFrame, model: str, predicted: str, alignment: Optional[str], min_skill: float,
          config: FitnessConfig, noise_rate: Optional[float] = None, noise_source: str = "") -> Optional[FitnessReport]:
    if predicted not in frame or "label" not in frame or not len(frame):
        return None
    labels = frame["label"].astype(str).to_numpy()
    agree = frame[predicted].astype(str).to_numpy() == labels
    classes = int(len(np.unique(labels)))
    chance = 1.0 / max(classes, 1)
    noise = float(np.clip(noise_rate, 0.0, 1.0 - chance - 1e-9)) if noise_rate is not None else 0.0
    agreement = float(agree.mean())
    span = max(1.0 - noise - chance, 1e-9)
    skill = (agreement - chance) / span
    skill_high = (precision_interval(int(agree.sum()), len(agree))[1] - chance) / span
    gap = alignment_gap(frame, alignment, agree) if alignment is not None else float("nan")
    fits = skill_high >= min_skill and (np.isnan(gap) or gap >= config.min_alignment_gap)
    return FitnessReport(model, min_skill, classes, len(frame), agreement, chance, noise,
                         noise_source if noise_rate is not None else "no noise estimate", float(skill),
                         float(skill_high), gap, bool(fits), config)


def alignment_gap(frame: pd.DataFrame, column: str, agree: np.ndarray) -> float:
    """Median ``column`` where the model agrees with the label minus where it disagrees, in robust sigmas."""
    if column not in frame or agree.all() or not agree.any():
        return float("nan")
    values = frame[column].to_numpy(dtype=float)
    sigma = float(median_abs_deviation(values, scale="normal", nan_policy="omit"))
    if sigma <= 0:
        return float("nan")
    return float((np.median(values[agree]) - np.median(values[~agree])) / sigma)
