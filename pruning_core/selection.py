"""Pruning strategies: choose exactly ``k`` samples to keep from a score table.

Scores are combined after rank normalisation (each column mapped to [0, 1] with 1 = most
suspicious or hardest, using the direction from its :class:`ScoreInfo`), so scores on
different scales can be weighted against each other.  Every strategy keeps exactly the
requested number of samples and never keeps a sample a reviewer removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import pandas as pd

from pruning_core.audit.suggest import SUGGESTED_LABEL, SUGGESTION_CONFIDENCE, FixConfig, confident_relabels
from pruning_core.scoring.score_info import ScoreInfo

Keep = Union[int, float]

DYN_UNC_COLUMN = "dynamics.dyn_unc"
ADAPRUNER_COLUMN = "adapruner.keep_logit"
CPS_COLUMNS = ("clip.label_alignment", "clip.diversity")
DUPLICATE_GROUP_COLUMN = "clip.duplicate_group"
CCS_BETA = 0.1
"""CCS's hard cut-off: the fraction of the hardest samples dropped before stratified sampling (Zheng et al.)."""


@dataclass(frozen=True)
class Group:
    """One group's selection problem, what a :class:`Strategy`'s ``pick`` receives.

    A group is every eligible sample, or one class when the selection is class-balanced; the
    arrays are over its members, in their order, and ``rng`` is shared by all groups of one call.
    """

    score: np.ndarray
    """The weighted combined score (1 = most suspicious) for strategies that use weights, else zeros."""
    columns: Mapping[str, np.ndarray]
    """The strategy's own score columns."""
    k: int
    rng: np.random.Generator
    seed: int
    ccs_beta: float
    ccs_strata: int
    cps_params: Mapping[str, Any]


@dataclass(frozen=True)
class Strategy:
    """A pruning strategy: what it needs, how the app may run it, and how it picks.

    The pages, the CLI and :func:`select` read these fields instead of testing strategy names, so
    a new strategy is one entry in :data:`STRATEGIES`.
    """

    name: str
    description: str
    pick: Callable[[Group], np.ndarray]
    """Indices (into the group) of exactly ``group.k`` members to keep."""
    columns: tuple[str, ...] = ()
    """Score columns the strategy is defined on; it cannot run without them."""
    optional_columns: tuple[str, ...] = ()
    """Columns it uses where the table has them and runs without (``Group.columns`` then lacks them)."""
    uses_weights: bool = False
    """Ranks by the weighted combination of all score columns (needs at least one score)."""
    uses_seed: bool = False
    """The seed changes which samples are kept."""
    live: bool = True
    """Cheap enough (milliseconds) to rerun on every change of the Prune page; else it runs on demand."""
    fitted_per_ratio: bool = False
    """Its columns depend on the keep ratio, so Evaluate learns them per run instead of reading the table."""
    settings: Optional[Callable[[], Any]] = None
    """Returns the default instance of the frozen dataclass of its user-facing settings (CPS: ``CPSConfig``,
    imported only when asked, as it needs torch); the Prune page and the CLI offer its fields, and the
    values chosen reach ``pick`` as ``Group.cps_params`` (the recipe records them)."""
    relabels: bool = False
    """Fixes as well as drops: kept samples whose suggested label is confident enough (``settings``'
    threshold) are relabelled, see :func:`strategy_relabels`."""

    def runnable_on(self, frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> bool:
        """Its own columns exist in ``frame`` and, if it combines scores, there is one to combine."""
        return (all(c in frame for c in self.columns)
                and (not self.uses_weights or any(name in frame for name in infos)))


def _stable_order(score: np.ndarray, descending: bool) -> np.ndarray:
    return np.argsort(-score if descending else score, kind="stable")


def _lowest(group: Group) -> np.ndarray:
    return _stable_order(group.score, descending=False)[: group.k]


def _highest(group: Group) -> np.ndarray:
    return _stable_order(group.score, descending=True)[: group.k]


def _highest_column(column: str) -> Callable[[Group], np.ndarray]:
    """Keep the members with the highest value of one score column."""
    def pick(group: Group) -> np.ndarray:
        return _stable_order(np.asarray(group.columns[column], dtype=np.float64), descending=True)[: group.k]
    return pick


def _random(group: Group) -> np.ndarray:
    return group.rng.choice(len(group.score), size=group.k, replace=False)


def _ccs_pick(group: Group) -> np.ndarray:
    return _ccs(group.score, group.k, group.rng, group.ccs_beta, group.ccs_strata)


def _cps_settings() -> Any:
    from pruning_core.clip_scores.cps import CPSConfig

    return CPSConfig()


def _cps_pick(group: Group) -> np.ndarray:
    # Imported here: the CPS optimiser needs torch, which no other strategy should pay for.
    from pruning_core.clip_scores.cps import cps_select

    alignment, diversity = (group.columns[c] for c in CPS_COLUMNS)
    chosen = cps_select(alignment, diversity, group.k, groups=group.columns.get(DUPLICATE_GROUP_COLUMN),
                        seed=group.seed, **group.cps_params)
    return np.flatnonzero(np.asarray(chosen, dtype=bool))


def _fix_threshold(params: Mapping[str, Any]) -> float:
    return float(params.get("threshold", FixConfig().threshold))


def _fix_pick(group: Group) -> np.ndarray:
    """Easiest, after fixing: a confidently relabelled sample counts as clean (ranked first), the rest
    of the flagged set is what the combined score drops."""
    frame = pd.DataFrame({c: group.columns[c] for c in FIX_COLUMNS})
    fixed = confident_relabels(frame, _fix_threshold(group.cps_params))
    return _stable_order(np.where(fixed, -1.0, group.score), descending=False)[: group.k]


FIX_COLUMNS = (SUGGESTED_LABEL, SUGGESTION_CONFIDENCE, "label")

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("easiest", "keep the least suspicious samples (drops likely noise and the hardest samples)",
             _lowest, uses_weights=True),
    Strategy("hardest", "keep the most difficult samples (for clean data and small budgets)",
             _highest, uses_weights=True),
    Strategy("ccs", "coverage-centric: cut the hardest beta fraction as likely noise, then sample evenly across "
             "score strata", _ccs_pick, uses_weights=True, uses_seed=True),
    Strategy("dyn_unc", "keep the samples with the highest Dynamic Uncertainty (He et al.)",
             _highest_column(DYN_UNC_COLUMN), columns=(DYN_UNC_COLUMN,)),
    Strategy("cps", "CLIP-powered selection (Yang et al.): an optimised mask over label alignment and diversity "
             "that pays for each near-duplicate pair it keeps (one copy of a duplicate, not all)", _cps_pick,
             columns=CPS_COLUMNS,
             optional_columns=(DUPLICATE_GROUP_COLUMN,), uses_seed=True, live=False,
             settings=_cps_settings),
    Strategy("adapruner", "AdaPruner: the keep mask learned jointly with a proxy model (highest mask logits kept)",
             _highest_column(ADAPRUNER_COLUMN), columns=(ADAPRUNER_COLUMN,), fitted_per_ratio=True),
    Strategy("fix", "fix, not only drop: relabel the samples whose suggested label is confident (threshold), "
             "then keep the least suspicious of the rest (drops what remains flagged)", _fix_pick,
             columns=FIX_COLUMNS, uses_weights=True, settings=FixConfig, relabels=True),
    Strategy("random", "uniform random sample (the baseline every strategy must beat)", _random, uses_seed=True),
)}
"""Every strategy by name, in the order the app and the CLI list them."""


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``, or a one-line error listing the choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None


def available_strategies(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> list[str]:
    """The strategies ``frame`` can run, in ``STRATEGIES`` order: their own columns exist, and the
    ones ranking by the weighted combination have at least one score to combine."""
    return [name for name, s in STRATEGIES.items() if s.runnable_on(frame, infos)]


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
        raise ValueError(f"keep={keep!r}: give a fraction in (0, 1] or a count of samples from 2 to {n} "
                         "(1 means all of them)")
    if not 0 <= count <= n:
        raise ValueError(f"keep={keep!r} asks for {count} samples but the dataset has {n}")
    return count


def parse_keep(text: str, field: str = "--keep") -> Keep:
    """CLI form: '0.8' is a fraction, '40000' a count; ``field`` names the flag in the error."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: {text!r} is not a number; give a fraction in (0, 1] or a count") from None
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


SAFE_WEIGHT_RANGE = (1e-150, 1e150)
"""Largest weights whose weighted sums of ranks neither overflow nor lose precision; others are rescaled."""


def check_weights(weights: Optional[Mapping[str, float]]) -> None:
    """Refuse a weight that is not a finite number: a NaN makes every combined score NaN, and the
    "selection" would silently be file order."""
    def finite(weight: Any) -> bool:
        try:
            return not isinstance(weight, (bool, str)) and bool(np.isfinite(float(weight)))
        except (TypeError, ValueError):
            return False

    not_finite = [name for name, w in (weights or {}).items() if not finite(w)]
    if not_finite:
        raise ValueError(f"weight of {', '.join(not_finite)} is not a finite number")


DEFAULT_DETECTORS = ("dynamics.noise_score", "clip.label_alignment")
"""The score a ranking starts from when the user chose none, best first: the proxy's noise posterior where training
dynamics ran (it detects class-dependent noise far better than the loss or AUM: docs/benchmarks.md, "Noise detectors
on class-dependent noise"), else CLIP's label alignment.  Review's default detector and the default weights of the
weighted strategies (``easiest`` ...) both read it."""


def default_detector(columns: Any) -> str:
    """The first of :data:`DEFAULT_DETECTORS` among ``columns`` (score names), else the first column."""
    names = list(columns)
    if not names:
        raise ValueError("no score columns")
    return next((name for name in DEFAULT_DETECTORS if name in names), names[0])


def default_weights(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> dict[str, float]:
    """The weights a weighted strategy uses when none are given: the default detector alone when the table has one
    of :data:`DEFAULT_DETECTORS`, else every score equally."""
    scores = [name for name in infos if name in frame]
    preferred = [name for name in DEFAULT_DETECTORS if name in scores]
    return {preferred[0]: 1.0} if preferred else {name: 1.0 for name in scores}


def combined_score(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    weights: Optional[Mapping[str, float]] = None,
    *,
    ranks: Optional[ScoreRanks] = None,
) -> np.ndarray:
    """Weighted mean of rank-normalised scores; higher = more suspicious / harder.

    No ``weights``: :func:`default_weights`.
    ``ranks`` (made once per table by the caller) skips re-ranking; the result is identical.
    """
    weights = dict(weights) if weights else default_weights(frame, infos)
    unknown = [name for name in weights if name not in frame or name not in infos]
    if unknown:
        raise ValueError(f"unknown score column(s) {unknown}; available: {sorted(n for n in infos if n in frame)}")
    check_weights(weights)
    largest = max((abs(float(w)) for w in weights.values()), default=0.0)
    if largest == 0:
        raise ValueError("all score weights are zero; give at least one score a weight")
    if not SAFE_WEIGHT_RANGE[0] <= largest <= SAFE_WEIGHT_RANGE[1]:
        # Weights are relative: 1e308 + 1e308 overflows and 5e-324 * rank underflows, so such weights are
        # divided by the largest and select exactly what that normalised form selects.  Weights in the
        # range are used as given, so manifests written before this select the same samples bit for bit.
        weights = {name: float(w) / largest for name, w in weights.items()}
    total = sum(abs(w) for w in weights.values())
    if ranks is None:
        ranks = ScoreRanks(frame, infos)
    ranks.check_table(frame)
    combined = np.zeros(len(frame))
    for name, weight in weights.items():
        combined += weight * ranks[name]
    return combined / total


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
    ccs_beta: float = CCS_BETA,
    ccs_strata: int = 50,
    cps_params: Optional[Mapping[str, float]] = None,
    ranks: Optional[ScoreRanks] = None,
) -> np.ndarray:
    """Boolean mask over ``frame`` with exactly ``keep`` samples kept.

    ``keep`` counts against the whole dataset; samples in ``removed`` (a reviewer's
    decisions) are never kept, and asking for more than remain is an error, not a silent
    shortfall.  ``balance`` keeps each class in proportion to its size.  ``ranks`` (one
    :class:`ScoreRanks` per table, kept by the caller) makes repeated calls cheap.
    ``strategy`` names an entry of :data:`STRATEGIES`, which picks within each group.
    """
    chosen = get_strategy(strategy)
    n = len(frame)
    k = keep_count(keep, n)
    eligible = np.ones(n, dtype=bool) if removed is None else ~np.asarray(removed, dtype=bool)
    if k > eligible.sum():
        raise ValueError(f"cannot keep {k} samples: only {int(eligible.sum())} remain after review removals")
    score = _strategy_score(frame, infos, chosen, weights, ranks)
    columns = {c: frame[c].to_numpy() for c in chosen.columns + chosen.optional_columns if c in frame}
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(eligible)
    groups = [(idx, k)]
    if balance:
        groups = _class_groups(idx, frame["label"].to_numpy()[idx], k)
    mask = np.zeros(n, dtype=bool)
    for members, quota in groups:
        group = Group(score=score[members], columns={c: v[members] for c, v in columns.items()}, k=quota, rng=rng,
                      seed=seed, ccs_beta=ccs_beta, ccs_strata=ccs_strata, cps_params=cps_params or {})
        mask[members[chosen.pick(group)]] = True
    return mask


def _strategy_score(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    strategy: Strategy,
    weights: Optional[Mapping[str, float]],
    ranks: Optional[ScoreRanks],
) -> np.ndarray:
    """The weighted combination for a strategy that ranks by it, else zeros; first, its columns must exist."""
    missing = [c for c in strategy.columns if c not in frame]
    if missing:
        raise ValueError(f"strategy {strategy.name!r} needs score column(s) {missing}; compute them on the Score step")
    if not strategy.uses_weights:
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
    ccs_beta: float = CCS_BETA
    cps_params: Optional[Mapping[str, float]] = None

    def __post_init__(self) -> None:
        check_weights(self.weights)  # before a manifest records them, whatever the strategy
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float, np.integer, np.floating)):
            raise ValueError(f"keep {self.keep!r} is not a number (a fraction in (0, 1] or a count)")

    def resolved(self, frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> "SelectionRecipe":
        """This recipe with the weights a weighted strategy uses spelled out (:func:`default_weights` when none
        were given), so a manifest replays the same selection after the defaults change."""
        if self.weights is not None or not get_strategy(self.strategy).uses_weights or not infos:
            return self
        return replace(self, weights=default_weights(frame, infos))

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
        cps_params=recipe.cps_params,
        ranks=ranks,
    )


def strategy_relabels(frame: pd.DataFrame, recipe: SelectionRecipe, mask: np.ndarray) -> dict[str, str]:
    """path -> suggested label for the kept samples a relabelling strategy fixes; empty for the others.

    Recomputed from the score table and the recipe alone, so a replayed manifest relabels exactly
    what the original selection relabelled.
    """
    if not get_strategy(recipe.strategy).relabels:
        return {}
    fixed = confident_relabels(frame, _fix_threshold(recipe.cps_params or {})) & np.asarray(mask, dtype=bool)
    return dict(zip(frame["path"][fixed].astype(str), frame[SUGGESTED_LABEL][fixed].astype(str)))


@dataclass
class SelectionPreview:
    """What the Prune page draws for one recipe: computed without Streamlit so it can be benchmarked."""

    mask: np.ndarray  # kept
    removed_by_review: np.ndarray
    combined: np.ndarray  # the weighted, rank-normalised score (1 = most suspicious)
    per_class: pd.DataFrame  # index class; columns kept, removed by selection, removed by review
    hist_edges: np.ndarray
    hist_kept: np.ndarray
    hist_removed: np.ndarray
    borderline_kept: np.ndarray  # row positions, the kept samples nearest the cut
    borderline_removed: np.ndarray  # row positions, the removed samples nearest the cut

    @property
    def n_kept(self) -> int:
        return int(self.mask.sum())


def preview_selection(
    frame: pd.DataFrame,
    infos: Mapping[str, Any],
    recipe: SelectionRecipe,
    removed_paths: Optional[list[str]] = None,
    *,
    bins: int = 40,
    n_border: int = 8,
    ranks: Optional[ScoreRanks] = None,
) -> SelectionPreview:
    """Run the recipe and summarise it: per-class counts, score histograms, samples at the cut.

    ``ranks`` (one :class:`ScoreRanks` per score table, kept by the caller) saves re-ranking
    every column on each call: the selection and the combined-score histogram share it.
    """
    mask = run_recipe(frame, infos, recipe, removed_paths, ranks=ranks)
    reviewed = removed_mask(frame, removed_paths)
    reviewed = np.zeros(len(frame), dtype=bool) if reviewed is None else reviewed
    combined = combined_score(frame, infos, recipe.weights, ranks=ranks) if infos else np.zeros(len(frame))
    by_selection = ~mask & ~reviewed
    codes, uniques = pd.factorize(frame["label"].astype(str), sort=True)
    classes, inverse = np.asarray(uniques), codes
    per_class = pd.DataFrame(
        {
            "kept": np.bincount(inverse, weights=mask, minlength=len(classes)).astype(np.int64),
            "removed by selection": np.bincount(inverse, weights=by_selection, minlength=len(classes)).astype(np.int64),
            "removed by review": np.bincount(inverse, weights=reviewed, minlength=len(classes)).astype(np.int64),
        },
        index=pd.Index(classes, name="class"),
    )
    edges = np.linspace(0.0, 1.0, bins + 1)
    hist_kept = np.histogram(combined[mask], bins=edges)[0]
    hist_removed = np.histogram(combined[~mask], bins=edges)[0]
    # The cut: where kept and removed meet on the combined score.  Strategies that keep the
    # least suspicious (easiest, ccs) have their boundary at the kept maximum; those that keep
    # the hardest at the kept minimum.
    kept_pos, removed_pos = np.flatnonzero(mask), np.flatnonzero(by_selection)
    keeps_low = (len(kept_pos) == 0 or len(removed_pos) == 0
                 or combined[kept_pos].mean() <= combined[removed_pos].mean())
    if keeps_low:
        border_kept = kept_pos[np.argsort(-combined[kept_pos], kind="stable")[:n_border]]
        border_removed = removed_pos[np.argsort(combined[removed_pos], kind="stable")[:n_border]]
    else:
        border_kept = kept_pos[np.argsort(combined[kept_pos], kind="stable")[:n_border]]
        border_removed = removed_pos[np.argsort(-combined[removed_pos], kind="stable")[:n_border]]
    return SelectionPreview(mask, reviewed, combined, per_class, edges, hist_kept, hist_removed,
                            border_kept, border_removed)
