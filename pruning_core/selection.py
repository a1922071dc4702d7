"""Pruning strategies: choose exactly ``k`` samples to keep from a score table.

Scores are combined after rank normalisation (each column mapped to [0, 1] with 1 = most
suspicious or hardest, using the direction from its :class:`ScoreInfo`), so scores on
different scales can be weighted against each other.  Every strategy keeps exactly the
requested number of samples and never keeps a sample a reviewer removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import pandas as pd

from pruning_core.score_info import ScoreInfo

Keep = Union[int, float]

DYN_UNC_COLUMN = "dynamics.dyn_unc"
ADAPRUNER_COLUMN = "adapruner.keep_logit"

STRATEGIES: dict[str, str] = {
    "easiest": "keep the least suspicious samples (drops likely noise and the hardest samples)",
    "hardest": "keep the most difficult samples (for clean data and small budgets)",
    "ccs": "coverage-centric: cut the hardest beta fraction as likely noise, then sample evenly across score strata",
    "dyn_unc": "keep the samples with the highest Dynamic Uncertainty (He et al.)",
    "cps": "CLIP-powered selection: optimised mask over label alignment and diversity (Yang et al.)",
    "adapruner": "AdaPruner: the keep mask learned jointly with a proxy model (highest mask logits kept)",
    "random": "uniform random sample (the baseline every strategy must beat)",
}


REQUIRED_COLUMNS: dict[str, list[str]] = {
    "dyn_unc": [DYN_UNC_COLUMN],
    "cps": ["clip.label_alignment", "clip.diversity"],
    "adapruner": [ADAPRUNER_COLUMN],
}
"""Score columns a strategy is defined on (the others rank by the weighted combination)."""


def available_strategies(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> list[str]:
    """The strategies ``frame`` can run, in ``STRATEGIES`` order: their own columns exist, and the
    ones ranking by the weighted combination have at least one score to combine."""
    combined = any(name in frame for name in infos)
    return [s for s in STRATEGIES
            if all(c in frame for c in REQUIRED_COLUMNS.get(s, [])) and (combined or s in REQUIRED_COLUMNS or s == "random")]


def keep_count(keep: Keep, n: int) -> int:
    """A fraction in (0, 1] becomes round(fraction * n); an integer is a count."""
    if isinstance(keep, (bool, np.bool_)):
        raise ValueError("keep must be a fraction in (0, 1] or a whole count")
    if isinstance(keep, (int, np.integer)):
        count = int(keep)
    elif isinstance(keep, float) and float(keep).is_integer() and keep > 1:
        count = int(keep)
    elif 0.0 < float(keep) <= 1.0:
        count = int(round(float(keep) * n))
        if count == 0 and n > 0:
            raise ValueError(f"keep={keep!r} of {n} samples rounds to 0 samples; keep at least {1 / n:.3g} "
                             "or give a count")
    else:
        raise ValueError(f"keep={keep!r}: give a fraction in (0, 1] or a count from 0 to {n}")
    if not 0 <= count <= n:
        raise ValueError(f"keep={keep!r} asks for {count} samples but the dataset has {n}")
    return count


def parse_keep(text: str) -> Keep:
    """CLI form: '0.8' is a fraction, '40000' a count."""
    value = float(text)
    return int(value) if value.is_integer() and value > 1 else value


def rank_normalise(values: np.ndarray, suspicious: str) -> np.ndarray:
    """Map scores to [0, 1] by rank, 1 = most suspicious; missing values sit in the middle."""
    series = pd.Series(np.asarray(values, dtype=np.float64))
    ranks = series.rank(method="average", pct=True, ascending=(suspicious == "high")).to_numpy()
    return np.where(np.isnan(ranks), 0.5, ranks)


class ScoreRanks:
    """Rank-normalised score columns of one score table, each ranked on first use and then kept.

    Ranking (a sort per column) dominates a selection on a large table, yet only the weights
    change while a user moves sliders.  The Prune page therefore keeps one ``ScoreRanks`` per
    score table and passes it to every call, so a re-weighting costs a weighted sum.  It is
    bound to the frame object it was made for, and refuses any other, so stale ranks can never
    produce a different subset than a fresh computation.
    """

    def __init__(self, frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> None:
        self._frame = frame
        self._infos = infos
        self._columns: dict[str, np.ndarray] = {}

    def check_table(self, frame: pd.DataFrame) -> None:
        if frame is not self._frame:
            raise ValueError("these score ranks were computed for another score table")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            self._columns[name] = rank_normalise(self._frame[name].to_numpy(), self._infos[name].suspicious)
        return self._columns[name]


def check_weights(weights: Optional[Mapping[str, float]]) -> None:
    """Refuse a weight that is not a finite number: a NaN makes every combined score NaN, and the
    "selection" would silently be file order."""
    not_finite = [name for name, w in (weights or {}).items() if not np.isfinite(float(w))]
    if not_finite:
        raise ValueError(f"weight of {', '.join(not_finite)} is not a finite number")


def combined_score(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    weights: Optional[Mapping[str, float]] = None,
    *,
    ranks: Optional[ScoreRanks] = None,
) -> np.ndarray:
    """Weighted mean of rank-normalised scores; higher = more suspicious / harder.

    ``ranks`` (made once per table by the caller) skips re-ranking; the result is identical.
    """
    weights = dict(weights) if weights else {name: 1.0 for name in infos if name in frame}
    unknown = [name for name in weights if name not in frame or name not in infos]
    if unknown:
        raise ValueError(f"unknown score column(s) {unknown}; available: {sorted(n for n in infos if n in frame)}")
    check_weights(weights)
    total = sum(abs(w) for w in weights.values())
    if total == 0:
        raise ValueError("all score weights are zero; give at least one score a weight")
    if ranks is None:
        ranks = ScoreRanks(frame, infos)
    ranks.check_table(frame)
    combined = np.zeros(len(frame))
    for name, weight in weights.items():
        combined += weight * ranks[name]
    return combined / total


def _stable_order(score: np.ndarray, descending: bool) -> np.ndarray:
    return np.argsort(-score if descending else score, kind="stable")


def _ccs(score: np.ndarray, k: int, rng: np.random.Generator, beta: float, strata: int) -> np.ndarray:
    """Coverage-centric selection (Zheng et al.): drop the hardest, then fill strata evenly."""
    n = len(score)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cut = min(int(round(beta * n)), n - k)
    pool = _stable_order(score, descending=False)[: n - cut]  # easiest first; hardest `cut` dropped
    pool_scores = score[pool]
    edges = np.linspace(pool_scores.min(), pool_scores.max(), strata + 1)
    bins = np.clip(np.searchsorted(edges, pool_scores, side="right") - 1, 0, strata - 1)
    sizes = np.bincount(bins, minlength=strata)
    quota = np.zeros(strata, dtype=np.int64)
    budget = k
    for rank, b in enumerate(np.argsort(sizes, kind="stable")):  # smallest strata first, as in CCS
        share = budget // (strata - rank)
        quota[b] = min(sizes[b], share)
        budget -= quota[b]
    # Rounding leaves at most a few samples: give them to strata that still have room.
    room = sizes - quota
    while budget > 0:
        b = int(np.argmax(room))
        take = min(budget, room[b])
        quota[b] += take
        room[b] -= take
        budget -= take
    # Random samples within each stratum: shuffle once, then take each stratum's first `quota`.
    order = rng.permutation(len(pool))
    order = order[np.argsort(bins[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(len(pool)) - starts[bins[order]]
    return pool[order[position < quota[bins[order]]]]


def _pick(strategy: str, score: np.ndarray, k: int, rng: np.random.Generator, *, beta: float, strata: int) -> np.ndarray:
    """Indices (into ``score``) of the k samples one group keeps."""
    if strategy in ("easiest",):
        return _stable_order(score, descending=False)[:k]
    if strategy in ("hardest", "dyn_unc", "adapruner"):
        return _stable_order(score, descending=True)[:k]
    if strategy == "random":
        return rng.choice(len(score), size=k, replace=False)
    if strategy == "ccs":
        return _ccs(score, k, rng, beta, strata)
    raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def _largest_remainder(counts: np.ndarray, k: int) -> np.ndarray:
    """Split k in proportion to ``counts`` (largest remainder), summing to exactly k."""
    exact = k * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    leftover = k - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    return quota


def class_quotas(labels: np.ndarray, k: int) -> dict:
    """Split k across classes in proportion to their sizes (largest remainder), summing to k."""
    codes, classes = pd.factorize(labels, sort=True)  # hashing: far faster than np.unique on strings
    quota = _largest_remainder(np.bincount(codes, minlength=len(classes)), k)
    return dict(zip(classes.tolist(), quota.tolist()))


def _class_groups(idx: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[np.ndarray, int]]:
    """``idx`` split by class (classes sorted, members in ``idx`` order), each with its share of k."""
    codes, classes = pd.factorize(labels, sort=True)
    counts = np.bincount(codes, minlength=len(classes))
    members = np.split(idx[np.argsort(codes, kind="stable")], np.cumsum(counts)[:-1])
    return list(zip(members, _largest_remainder(counts, k).tolist()))


def select(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    keep: Keep,
    *,
    strategy: str = "easiest",
    weights: Optional[Mapping[str, float]] = None,
    balance: bool = False,
    removed: Optional[np.ndarray] = None,
    seed: int = 0,
    ccs_beta: float = 0.1,
    ccs_strata: int = 50,
    cps_select: Optional[Callable[..., np.ndarray]] = None,
    cps_params: Optional[Mapping[str, float]] = None,
    ranks: Optional[ScoreRanks] = None,
) -> np.ndarray:
    """Boolean mask over ``frame`` with exactly ``keep`` samples kept.

    ``keep`` counts against the whole dataset; samples in ``removed`` (a reviewer's
    decisions) are never kept, and asking for more than remain is an error, not a silent
    shortfall.  ``balance`` keeps each class in proportion to its size.  ``ranks`` (one
    :class:`ScoreRanks` per table, kept by the caller) makes repeated calls cheap.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    n = len(frame)
    k = keep_count(keep, n)
    eligible = np.ones(n, dtype=bool) if removed is None else ~np.asarray(removed, dtype=bool)
    if k > eligible.sum():
        raise ValueError(f"cannot keep {k} samples: only {int(eligible.sum())} remain after review removals")
    score = _strategy_score(frame, infos, strategy, weights, ranks)
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(eligible)
    groups = [(idx, k)]
    if balance:
        groups = _class_groups(idx, frame["label"].to_numpy()[idx], k)
    mask = np.zeros(n, dtype=bool)
    for members, quota in groups:
        if strategy == "cps":
            if cps_select is None:
                raise ValueError("the cps strategy needs the CLIP scores module (pruning_core.clip_scores)")
            chosen = cps_select(
                frame["clip.label_alignment"].to_numpy()[members],
                frame["clip.diversity"].to_numpy()[members],
                quota,
                seed=seed,
                **(cps_params or {}),
            )
            mask[members[np.asarray(chosen, dtype=bool)]] = True
        else:
            mask[members[_pick(strategy, score[members], quota, rng, beta=ccs_beta, strata=ccs_strata)]] = True
    return mask


def _strategy_score(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    strategy: str,
    weights: Optional[Mapping[str, float]],
    ranks: Optional[ScoreRanks],
) -> np.ndarray:
    """The score a strategy ranks by: the weighted combination, or the one score it is defined on."""
    required = REQUIRED_COLUMNS.get(strategy, [])
    missing = [c for c in required if c not in frame]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs score column(s) {missing}; compute them on the Score step")
    if strategy in ("dyn_unc", "adapruner"):  # defined on their one column
        return frame[required[0]].to_numpy(dtype=np.float64)
    if strategy in ("random", "cps"):
        return np.zeros(len(frame))
    if not infos:
        raise ValueError("no score columns to rank by; compute scores first or use strategy 'random'")
    return combined_score(frame, infos, weights, ranks=ranks)


@dataclass(frozen=True)
class SelectionRecipe:
    """Everything ``select`` needs besides the score table; stored in the manifest."""

    keep: float | int
    strategy: str
    weights: Optional[Mapping[str, float]] = None
    balance: bool = False
    seed: int = 0
    ccs_beta: float = 0.1
    cps_params: Optional[Mapping[str, float]] = None

    def __post_init__(self) -> None:
        check_weights(self.weights)  # before a manifest records them, whatever the strategy

    def as_dict(self) -> dict[str, Any]:
        return {
            "keep": self.keep,
            "strategy": self.strategy,
            "weights": dict(self.weights) if self.weights else None,
            "balance": self.balance,
            "seed": self.seed,
            "ccs_beta": self.ccs_beta,
            "cps_params": dict(self.cps_params) if self.cps_params else None,
        }


def removed_mask(frame: pd.DataFrame, removed_paths: Optional[list[str]]) -> Optional[np.ndarray]:
    """Reviewer removals (by path) as a mask over ``frame``."""
    return frame["path"].isin(set(removed_paths)).to_numpy() if removed_paths else None


def run_recipe(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    recipe: SelectionRecipe,
    removed_paths: Optional[list[str]] = None,
    *,
    ranks: Optional[ScoreRanks] = None,
) -> np.ndarray:
    """``select`` driven by a stored recipe: the one call the CLI, the app and replay share."""
    cps = None
    if recipe.strategy == "cps":
        from pruning_core.clip_scores.cps import cps_select as cps
    return select(
        frame,
        infos,
        recipe.keep,
        strategy=recipe.strategy,
        weights=recipe.weights,
        balance=recipe.balance,
        removed=removed_mask(frame, removed_paths),
        seed=recipe.seed,
        ccs_beta=recipe.ccs_beta,
        cps_select=cps,
        cps_params=recipe.cps_params,
        ranks=ranks,
    )
