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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from pruning_core.scoring.score_info import ScoreInfo

UNDECIDED = "undecided"
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


@dataclass(frozen=True)
class Finding:
    """One kind of problem: how many samples, flagged by which score at which threshold, and which rows."""

    kind: str  # "mislabelled" | "outliers" | "duplicates" | "caption mismatch" | "unreadable"
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

    def summary(self) -> dict:
        """The JSON-able numbers (no row list)."""
        out = {k: v for k, v in asdict(self).items() if k != "rows"}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Mislabels:
    """Which samples are likely mislabelled, by which detector, and what it suggests instead."""

    mask: np.ndarray  # bool (N,)
    score: str
    suggested: str  # column of suggested class names
    rule: str
    threshold: Optional[float] = None


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


def mislabels(frame: pd.DataFrame, config: OverviewConfig = OverviewConfig()) -> Optional[Mislabels]:
    """Likely mislabelled samples: cleanlab's issues when dynamics ran (held-out, so preferred), else CLIP's."""
    if "cleanlab.is_issue" in frame and "dynamics.suggested_label" in frame:
        mask = frame["cleanlab.is_issue"].to_numpy(dtype=float) == 1
        return Mislabels(mask, "cleanlab.is_issue", "dynamics.suggested_label",
                         "cleanlab.is_issue = 1 (confident learning's per-class thresholds)")
    if {"clip.zero_shot_margin", "clip.suggested_label"} <= set(frame.columns):
        margin = frame["clip.zero_shot_margin"].to_numpy(dtype=float)
        differs = frame["clip.suggested_label"].astype(str).to_numpy() != frame["label"].astype(str).to_numpy()
        mask = differs & (margin >= config.mislabel_margin)
        return Mislabels(mask, "clip.zero_shot_margin", "clip.suggested_label",
                         f"zero-shot top-1 ≠ label and clip.zero_shot_margin ≥ {config.mislabel_margin:g}",
                         config.mislabel_margin)
    return None


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


def class_quality(frame: pd.DataFrame, flagged: np.ndarray) -> pd.DataFrame:
    """Per given label: samples, flagged as likely mislabelled, and label quality = share not flagged."""
    labels = frame["label"].astype(str)
    table = pd.DataFrame({"samples": labels.value_counts(),
                          "flagged": labels[flagged].value_counts()}).fillna(0).astype(int)
    table["label_quality"] = 1.0 - table["flagged"] / table["samples"]
    table.index.name = "label"
    return table.sort_values(["label_quality", "samples"], ascending=[True, False])


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
    config: OverviewConfig = OverviewConfig(),
) -> Overview:
    """The health summary of a scored dataset.

    ``decisions`` (aligned with ``frame``; "undecided" where none) makes each finding count its
    still-open samples and restricts the flip matrix to them, so reviewing shrinks the numbers.
    ``skipped`` is the loader's count of unreadable files per kind (they have no row);
    ``scoring`` the score table's settings (``ScoreTable.settings``): the rules quote the k of the
    k-NN scores and the cosine the duplicate groups were found at from its ``"clip"`` entry, and the
    report carries it whole.
    """
    clip = dict((scoring or {}).get("clip") or {})
    dup_threshold, k = clip.get("dup_threshold"), clip.get("k")
    undecided = (np.ones(len(frame), dtype=bool) if decisions is None
                 else (decisions.reindex(frame.index).fillna(UNDECIDED) == UNDECIDED).to_numpy())
    findings: list[Finding] = []
    mis = mislabels(frame, config)
    if mis is not None:
        findings.append(_finding("mislabelled", "Likely mislabelled", mis.score, mis.rule, mis.mask, frame, undecided,
                                 threshold=mis.threshold))
    outliers = _z_finding("outliers", "Outliers", "clip.outlier", frame, infos, config.outlier_z, undecided,
                          f"; mean distance to k = {k} neighbours" if k is not None else "")
    if outliers is not None:
        findings.append(outliers)
    if "clip.duplicate_group" in frame:
        group = frame["clip.duplicate_group"].fillna(-1).to_numpy(dtype=np.int64)
        mask = group >= 0
        at = f"{dup_threshold:g}" if dup_threshold is not None else "the scoring's duplicate threshold"
        findings.append(_finding("duplicates", "Near-duplicate groups", "clip.duplicate_group",
                                 f"image cosine ≥ {at} to another member", mask, frame,
                                 undecided, groups=int(len(np.unique(group[mask]))), threshold=dup_threshold))
    captions = _z_finding("caption mismatch", "Caption mismatches", "clip.caption_alignment", frame, infos,
                          config.caption_z, undecided)
    if captions is not None:
        findings.append(captions)
    if skipped is not None:
        n = int(sum(skipped.values()))
        rule = ", ".join(f"{v:,} {k}" for k, v in skipped.items()) or "none"
        findings.append(Finding("unreadable", "Unreadable or skipped files", "dataset validation", rule,
                                np.zeros(0, dtype=np.int64), n, n))
    flagged = mis.mask if mis is not None else np.zeros(len(frame), dtype=bool)
    flips = (flip_matrix(frame, frame.index[flagged & undecided].to_numpy(), mis.suggested)
             if mis is not None else pd.DataFrame(dtype=int))
    settings = {"thresholds": asdict(config), "scoring": dict(scoring or {})}
    return Overview(len(frame), findings, class_quality(frame, flagged), flips, mis, settings)


def report_dict(ov: Overview) -> dict:
    """The overview's numbers as plain JSON-able data (no sample lists), with the settings they depend on."""
    return {
        "samples": ov.n_samples,
        "settings": ov.settings,
        "findings": [f.summary() for f in ov.findings],
        "class_quality": [{"label": str(k), **{c: (float(v) if c == "label_quality" else int(v))
                                               for c, v in row.items()}}
                          for k, row in ov.class_quality.iterrows()],
        "flips": [{"given": str(g), "suggested": str(s), "open": int(n)}
                  for (g, s), n in ov.flips.stack().items() if n > 0] if not ov.flips.empty else [],
    }


def report_json(ov: Overview) -> str:
    return json.dumps(report_dict(ov), indent=2, default=str)


def report_markdown(ov: Overview, name: str = "dataset") -> str:
    """A short human-readable report: findings with their rules, per-class quality, the top flips."""
    data = report_dict(ov)
    lines = [f"# PruneScope overview: {name}", "", f"{ov.n_samples:,} samples.", "",
             "| finding | samples | open | flagged by |", "|---|---:|---:|---|"]
    for f in ov.findings:
        title = f.title + (f" ({f.groups:,} groups)" if f.groups is not None else "")
        lines.append(f"| {title} | {f.count:,} | {f.open:,} | {f.rule} |")
    lines += ["", "## Label quality per class", "", "| class | samples | flagged | label quality |", "|---|---:|---:|---:|"]
    lines += [f"| {c['label']} | {c['samples']:,} | {c['flagged']:,} | {c['label_quality']:.1%} |"
              for c in data["class_quality"]]
    flips = sorted(data["flips"], key=lambda x: -x["open"])[:20]
    if flips:
        lines += ["", "## Most frequent class flips (open)", "", "| given | suggested | samples |", "|---|---|---:|"]
        lines += [f"| {x['given']} | {x['suggested']} | {x['open']:,} |" for x in flips]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in _flat(ov.settings)]
    return "\n".join(lines) + "\n"


def _flat(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings as ``(dotted.name, value)`` rows, in order."""
    rows: list[tuple[str, Any]] = []
    for name, value in settings.items():
        if isinstance(value, Mapping):
            rows += _flat(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", value))
    return rows
