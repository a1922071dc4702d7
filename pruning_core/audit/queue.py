"""A review queue that learns from the reviewer's verdicts (issue 21).

Why: one detector's ranking is wrong in a dataset-specific way (on asymmetric noise the proxy's
loss flags hard-but-correct samples of every class, while the flips sit in a few class pairs).
The reviewer's verdicts say which way it is wrong, so after every ``refit_every`` verdicts a small
model is refit on them and re-orders what is still undecided.

What the model sees (:func:`queue_features`): every score column as its rank within the table
(1 = most suspicious, :func:`pruning_core.selection.rank_normalise`), the given label one-hot, each
suggested label one-hot, whether it disagrees with the given label and which (given, suggested)
pair it is (class-dependent noise concentrates in a few pairs), and a few principal components of
the image embedding where one exists.  The verdicts are its target: remove / relabel = a problem,
keep = fine, skip = no evidence.

Picks.  Before the first refit (the cold start) the queue is the chosen detector's order, exactly
what the Review page showed before.  After it, the model's order.  Every ``1 / random_share``-th
pick is instead a uniform random draw from the undecided candidates (``pick == "random"``, stored
in the decision's ``source`` as ``queue:random``): those verdicts show the model the bulk of the
data it would otherwise never see, and they are the unbiased sample of the undecided pool behind
:attr:`QueuePlan.pool_estimate`.

The estimated precision of the next ``estimate_window`` model picks (:func:`next_precision`).  The
question is about the top of the model's order, where a random pick from a large pool almost never
lands (the top 50 of 50,000 is 0.1 % of it): random picks cannot measure it without leaning entirely
on the model's extrapolation.  The verdicts that *do* sample that region are the model's own recent
picks, and they are honest evidence about the model's calibration there: each was predicted (by the
model in force when it was picked, :meth:`LearningQueue.prequential`) before its verdict was known,
and it was picked on its features alone, so ``E[verdict | picked] = E[P(problem | x) | picked]``.
With ``H`` problems among the last ``M`` such picks, their mean prediction ``Q_B`` and the current
model's mean prediction ``Q_N`` over the next picks, the precision of the next picks is
``π · Q_N / Q_B``, where ``π`` (the rate at the recent picks) has the Jeffreys posterior
Beta(H + ½, M − H + ½) of :mod:`pruning_core.audit.estimates`; the model supplies only the *ratio*
(how much worse the next picks are than the last ones), the verdicts the level.  The interval is
the predictive one for the *realised* share of problems among the next ``N`` (a binomial draw
around that rate), so it can be checked against what the reviewer will find.  The model's predicted
drop lags when the top of the order is used up, so the point comes from the latest
``recent_window`` picks and the interval spans that estimate and the whole window's.  Random picks are
excluded from this claim (they sample the bulk, not the top: their hit rate would pull the level
down) and from the "confirmed by the model's picks" count; detector picks of the cold start carry
no prediction and are excluded too.

Recording: a decision made from the queue stores ``source = "queue:<pick>"`` (``detector``,
``model`` or ``random``) in the DecisionStore, and every refit appends one JSON line (model,
settings, input columns, verdicts it was fitted on, how much the order moved, the estimate) to
:func:`refit_log_path` beside the store, so the order a reviewer saw can be replayed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy.stats import beta, binom, kendalltau

from pruning_core.audit.estimates import DEFAULT_LEVEL, Estimate
from pruning_core.dynamics.noise import NOISE_SUGGESTION
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import score_columns
from pruning_core.selection import ScoreRanks

PROBLEM_ACTIONS = ("remove", "relabel")
FINE_ACTIONS = ("keep",)
PICKS = ("detector", "model", "random")
SOURCE_PREFIX = "queue:"
MODELS = ("logistic", "boosted")


@dataclass(frozen=True)
class QueueConfig:
    """Settings of the learning queue (the Review page and ``bench/bench_review_loop.py`` read these)."""

    refit_every: int = 20
    """Verdicts between refits; also the verdicts needed before the first model (the cold start)."""
    random_share: float = 0.10
    """Share of picks drawn uniformly at random from the undecided candidates (0 = none, at most 0.5)."""
    estimate_window: int = 50
    """The "next N" model picks whose precision the page estimates."""
    evidence_window: int = 100
    """Recent model picks (with their predictions made before the verdict) the estimate rests on."""
    recent_window: int = 25
    """The most recent of those picks, for the drift-aware point and the interval's other end (see
    :func:`next_precision`): chosen on the shared sym20/sym40/asym40 manifests and the demo, where 100 alone
    covered the truth in 60 % of asym40's runs and 25 alone in 83 %, the span of both in 93 %."""
    embedding_components: int = 8
    """Principal components of the image embedding among the model's inputs (where one exists)."""
    max_categories: int = 40
    """One-hot columns per categorical input (labels, label pairs): the most frequent; the rest share one."""
    model: str = "logistic"
    """``logistic`` (L2 logistic regression on standardised inputs) or ``boosted`` (a small gradient-boosted tree)."""
    regularization: float = 0.3
    """Inverse L2 strength C of the logistic model."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.refit_every < 1:
            raise ValueError(f"refit_every must be >= 1, got {self.refit_every}")
        if not 0.0 <= self.random_share <= 0.5:
            raise ValueError(f"random_share must be in [0, 0.5] (the rest are the model's picks), got {self.random_share}")
        if self.model not in MODELS:
            raise ValueError(f"unknown queue model {self.model!r}; choose from {', '.join(MODELS)}")

    @property
    def random_every(self) -> int:
        """Every how many picks one is random (0 = never)."""
        return 0 if self.random_share == 0 else max(1, int(round(1.0 / self.random_share)))


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Features:
    """The model's inputs: one row per table row, ``names`` says what each column is."""

    values: np.ndarray
    names: tuple[str, ...]


def _one_hot(values: pd.Series, prefix: str, max_categories: int) -> tuple[np.ndarray, list[str]]:
    """Columns for the ``max_categories`` most frequent values; rarer values share one ``other`` column."""
    values = values.astype(str)
    top = values.value_counts().index[:max_categories].tolist()
    codes = pd.Categorical(values, categories=top).codes
    columns = np.zeros((len(values), len(top) + 1), dtype=np.float32)
    columns[np.arange(len(values)), np.where(codes < 0, len(top), codes)] = 1.0
    names = [f"{prefix}={v}" for v in top] + [f"{prefix}=other"]
    keep = columns.any(axis=0)
    return columns[:, keep], [n for n, k in zip(names, keep) if k]


def suggestion_columns(frame: pd.DataFrame) -> list[str]:
    """The table's suggested-label columns (``clip.suggested_label``, ``dynamics.suggested_label``, the noise
    posterior's ``dynamics.noise_suggested_label``, ...)."""
    return [c for c in frame.columns if c.endswith(".suggested_label") or c == NOISE_SUGGESTION]


def queue_features(
    frame: pd.DataFrame,
    infos: Mapping[str, ScoreInfo],
    *,
    ranks: Optional[ScoreRanks] = None,
    embeddings: Optional[np.ndarray] = None,
    config: QueueConfig = QueueConfig(),
) -> Features:
    """The queue model's inputs for every row of a score table (see the module docstring for why these)."""
    ranks = ranks if ranks is not None else ScoreRanks(frame, infos)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    scores = score_columns(frame, infos)
    if scores:
        blocks.append(np.column_stack([ranks[c] for c in scores]).astype(np.float32))
        names += [f"rank:{c}" for c in scores]
    given = frame["label"].astype(str)
    block, block_names = _one_hot(given, "label", config.max_categories)
    blocks.append(block)
    names += block_names
    for column in suggestion_columns(frame):
        suggested = frame[column].astype(str)
        differs = (suggested != given).to_numpy()
        block, block_names = _one_hot(suggested, column, config.max_categories)
        pairs, pair_names = _one_hot(given.where(differs, "") + "→" + suggested.where(differs, ""),
                                     f"{column}:pair", config.max_categories)
        pair_keep = [i for i, n in enumerate(pair_names) if not n.endswith("=→")]  # agreeing rows: no pair column
        blocks += [block, differs[:, None].astype(np.float32), pairs[:, pair_keep]]
        names += block_names + [f"{column}:disagrees"] + [pair_names[i] for i in pair_keep]
    if embeddings is not None and config.embedding_components > 0:
        block = embedding_components(embeddings, config.embedding_components, seed=config.seed)
        blocks.append(block)
        names += [f"embedding:pc{i + 1}" for i in range(block.shape[1])]
    return Features(np.hstack(blocks).astype(np.float32), tuple(names))


def embedding_components(embeddings: np.ndarray, n_components: int, *, seed: int = 0) -> np.ndarray:
    """The first principal components of the embedding rows (missing rows: 0), scaled to unit variance."""
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float32)
    missing = ~np.isfinite(x).all(axis=1)
    n_components = min(n_components, x.shape[1], max(1, int((~missing).sum()) - 1))
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed).fit(x[~missing])
    out = np.zeros((len(x), n_components), dtype=np.float32)
    out[~missing] = pca.transform(x[~missing]) / np.sqrt(pca.explained_variance_ + 1e-12)
    return out


def verdict_targets(actions: Sequence[str]) -> np.ndarray:
    """1 = a problem (remove, relabel), 0 = fine (keep), -1 = no evidence (skip and anything else)."""
    actions = np.asarray(actions, dtype=object)
    return np.where(np.isin(actions, PROBLEM_ACTIONS), 1, np.where(np.isin(actions, FINE_ACTIONS), 0, -1))


# ----------------------------------------------------------------------------- the model


class ProblemModel:
    """P(a reviewer calls this sample a problem | its queue features), refit on the verdicts so far.

    scikit-learn-like: settings in ``__init__``, ``fit(X, y)`` learns ``estimator_`` (and
    ``n_verdicts_``, ``problem_rate_``); ``score(X)`` is the problem probability per row (a score in
    PruneScope's sense: higher = more suspicious).  Verdicts of one kind only (all problems, or
    all fine) cannot separate anything: the model then predicts their rate for every row, so the
    queue falls back on its tie-break (the detector's order).
    """

    def __init__(self, model: str = "logistic", regularization: float = 0.3, seed: int = 0) -> None:
        self.model = model
        self.regularization = regularization
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "ProblemModel":
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0 or not np.isin(y, (0, 1)).all():
            raise ValueError("fit needs at least one verdict, each 0 (fine) or 1 (problem)")
        self.n_verdicts_ = int(len(y))
        self.problem_rate_ = float(y.mean())
        if y.min() == y.max():
            self.estimator_ = None
            return self
        if self.model == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self.estimator_ = make_pipeline(StandardScaler(),
                                            LogisticRegression(C=self.regularization, max_iter=1000))
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            self.estimator_ = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=8,
                                                             min_samples_leaf=10, l2_regularization=1.0,
                                                             random_state=self.seed)
        self.estimator_.fit(X, y)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Problem probability of each row of ``X``."""
        if self.estimator_ is None or len(X) == 0:
            return np.full(len(X), self.problem_rate_)
        return self.estimator_.predict_proba(X)[:, 1]

    def describe(self) -> dict:
        """JSON-able: what was fitted, for the refit record."""
        return {"model": self.model, "regularization": self.regularization, "seed": self.seed,
                "fitted_on": self.n_verdicts_, "problem_rate": round(self.problem_rate_, 4),
                "constant": self.estimator_ is None}


# ----------------------------------------------------------------------------- the queue


@dataclass(frozen=True)
class Moved:
    """How much the order changed at the last refit."""

    new_in_next: int
    """How many of the next ``window`` model picks were not among the previous order's next ``window``."""
    window: int
    kendall_tau: float
    """Rank correlation of the previous and the new order over the undecided candidates."""


@dataclass(frozen=True)
class QueuePlan:
    """What the queue shows next, and what it can claim."""

    rows: np.ndarray
    """Positions (0-based rows of the table) of the next picks, first = next."""
    picks: np.ndarray
    """``detector`` / ``model`` / ``random`` per entry of ``rows``."""
    verdicts: int
    """Verdicts (keep / remove / relabel) so far among the candidates."""
    fitted_on: int
    """Verdicts the model in force was fitted on (0: cold start, the detector's order)."""
    model: Optional[ProblemModel]
    problem_probability: Optional[np.ndarray]
    """The model's score for every table row (None at the cold start)."""
    estimate: Optional[Estimate]
    """Estimated precision of the next ``estimate_window`` model picks (None before the model has picked)."""
    moved: Optional[Moved]
    pool_estimate: Optional[Estimate]
    """Share of problems among the random picks (Jeffreys), each uniform over the candidates undecided when it
    was drawn: the undecided pool's rate as sampled over the session so far (the model's picks since have
    taken problems out of it, so today's rate is lower, not higher)."""
    model_picks_confirmed: tuple[int, int] = (0, 0)
    """(problems, verdicts) among the model's own picks (random and detector picks left out)."""
    next_refit_in: int = 0
    """Verdicts until the next refit."""
    inputs: tuple[str, ...] = field(default=())


def _fingerprint(rows: np.ndarray, targets: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(targets, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


class LearningQueue:
    """The learning review queue over one score table's features and one detector's order.

    ``detector_order``: table positions, most suspicious first (the cold-start order and the
    tie-break).  Models are cached by the exact verdicts they were fitted on, so replanning after
    every click refits only when a new block of ``refit_every`` verdicts is complete (an undo or a
    changed verdict inside a block invalidates it, since the key is the verdicts themselves).
    """

    def __init__(self, features: Features, detector_order: np.ndarray, config: QueueConfig = QueueConfig()) -> None:
        self.features = features
        self.config = config
        self.detector_order = np.asarray(detector_order, dtype=np.int64)
        n = len(features.values)
        if len(self.detector_order) != n or len(np.unique(self.detector_order)) != n:
            raise ValueError("detector_order must be a permutation of the table's rows")
        self.detector_rank = np.empty(n, dtype=np.int64)
        self.detector_rank[self.detector_order] = np.arange(n)
        self.random_order = np.random.default_rng(config.seed).permutation(n)
        self._models: dict[str, ProblemModel] = {}

    # -- models --------------------------------------------------------------------------------
    def model_for(self, rows: np.ndarray, targets: np.ndarray) -> Optional[ProblemModel]:
        """The model fitted on these verdicts (cached), or None when there are none."""
        if len(rows) == 0:
            return None
        key = _fingerprint(rows, targets)
        if key not in self._models:
            model = ProblemModel(self.config.model, self.config.regularization, self.config.seed)
            self._models[key] = model.fit(self.features.values[rows], targets)
        return self._models[key]

    def order(self, model: Optional[ProblemModel], candidates: np.ndarray) -> np.ndarray:
        """``candidates`` (table positions) most suspicious first: the model's order, ties by the detector's."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if model is None:
            return candidates[np.argsort(self.detector_rank[candidates], kind="stable")]
        probability = model.score(self.features.values[candidates])
        return candidates[np.lexsort((self.detector_rank[candidates], -probability))]

    # -- replay ---------------------------------------------------------------------------------
    def prequential(self, rows: np.ndarray, targets: np.ndarray, picks: np.ndarray,
                    last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, prediction made before the verdict, verdict) of the last ``last`` model picks.

        ``rows``/``targets``/``picks``: every decision in the order it was made (targets -1 for
        skips).  The model in force at a pick is the one fitted on the completed blocks of
        ``refit_every`` verdicts made before it, refit here from the cache when needed.
        """
        verdict = targets >= 0
        before = np.cumsum(verdict) - verdict  # verdicts made before each decision
        fitted_on = (before // self.config.refit_every) * self.config.refit_every
        chosen = np.flatnonzero((picks == "model") & verdict & (fitted_on > 0))[-last:]
        predictions = np.empty(len(chosen))
        verdict_rows, verdict_targets = rows[verdict], targets[verdict]
        for n_fit in np.unique(fitted_on[chosen]):
            at = fitted_on[chosen] == n_fit
            model = self.model_for(verdict_rows[:n_fit], verdict_targets[:n_fit])
            predictions[at] = model.score(self.features.values[rows[chosen[at]]])
        return rows[chosen], predictions, targets[chosen]

    # -- the plan -------------------------------------------------------------------------------
    def plan(self, rows: Sequence[int], actions: Sequence[str], picks: Sequence[str],
             candidates: Optional[np.ndarray] = None, length: int = 50) -> QueuePlan:
        """The next ``length`` picks after the decisions ``rows``/``actions``/``picks`` (oldest first).

        ``picks``: how each decision was picked (``detector``/``model``/``random``, anything else
        for decisions made elsewhere); ``candidates``: the table positions the queue draws from
        (default every row).
        """
        config = self.config
        n = len(self.features.values)
        rows = np.asarray(rows, dtype=np.int64)
        targets = verdict_targets(actions)
        picks = np.asarray(picks, dtype=object)
        pool = np.zeros(n, dtype=bool)
        pool[np.arange(n) if candidates is None else np.asarray(candidates, dtype=np.int64)] = True
        inside = pool[rows]
        rows, targets, picks = rows[inside], targets[inside], picks[inside]
        decided = np.zeros(n, dtype=bool)
        decided[rows] = True
        undecided = np.flatnonzero(pool & ~decided)

        verdict = targets >= 0
        n_verdicts = int(verdict.sum())
        fitted_on = (n_verdicts // config.refit_every) * config.refit_every
        verdict_rows, verdict_y = rows[verdict], targets[verdict]
        model = self.model_for(verdict_rows[:fitted_on], verdict_y[:fitted_on])
        ranked = self.order(model, undecided)

        window = config.estimate_window
        ahead = max(length, window + window // max(1, config.random_every - 1) + 1)  # room for `window` model picks
        plan_rows, plan_picks = self._interleave(ranked, undecided, start=len(rows), length=ahead,
                                                 pick="detector" if model is None else "model")
        moved = estimate = None
        if model is not None:
            previous = self.model_for(verdict_rows[:fitted_on - config.refit_every],
                                      verdict_y[:fitted_on - config.refit_every])
            moved = order_moved(self.order(previous, undecided), ranked, window)
            _, predicted, observed = self.prequential(rows, targets, picks, config.evidence_window)
            next_model = plan_rows[plan_picks == "model"][:window]
            if len(observed) and len(next_model):
                estimate = next_precision(model.score(self.features.values[next_model]), predicted, observed,
                                          recent=config.recent_window)
        random_verdicts = verdict & (picks == "random")
        pool_estimate = None
        if random_verdicts.any():
            hits = int(targets[random_verdicts].sum())
            pool_estimate = Estimate.from_verdicts(len(undecided), hits, int(random_verdicts.sum()),
                                                   source=f"verdicts on {int(random_verdicts.sum())} random picks")
        own = verdict & (picks == "model")
        return QueuePlan(
            rows=plan_rows[:length], picks=plan_picks[:length], verdicts=n_verdicts, fitted_on=fitted_on, model=model,
            problem_probability=None if model is None else model.score(self.features.values),
            estimate=estimate, moved=moved, pool_estimate=pool_estimate,
            model_picks_confirmed=(int(targets[own].sum()), int(own.sum())),
            next_refit_in=config.refit_every - n_verdicts % config.refit_every, inputs=self.features.names)

    def _interleave(self, ranked: np.ndarray, undecided: np.ndarray, *, start: int, length: int,
                    pick: str) -> tuple[np.ndarray, np.ndarray]:
        """Ranked picks with every ``random_every``-th decision (counting from ``start``) a random draw.

        The random draws walk one fixed seeded permutation of the table, skipping decided rows,
        non-candidates and the picks placed ahead of them, so a random pick stays put across reruns
        until it is decided, and each is uniform over the candidates still undecided when the
        reviewer reaches it (the permutation is independent of what was decided before).
        """
        every = self.config.random_every
        length = min(length, len(undecided))
        is_undecided = np.zeros(len(self.features.values), dtype=bool)
        is_undecided[undecided] = True
        streams = {pick: iter(ranked.tolist()), "random": iter(self.random_order[is_undecided[self.random_order]].tolist())}
        taken: set[int] = set()
        out = np.empty(length, dtype=np.int64)
        picks = np.empty(length, dtype=object)
        for i in range(length):
            kind = "random" if every and (start + i) % every == every - 1 else pick
            row = next(r for r in streams[kind] if r not in taken)
            taken.add(row)
            out[i], picks[i] = row, kind
        return out, picks


def order_moved(previous: np.ndarray, current: np.ndarray, window: int) -> Moved:
    """How many of the next ``window`` are new, and Kendall's tau of two orders of the same candidates."""
    new = len(set(current[:window].tolist()) - set(previous[:window].tolist()))
    position = pd.Series(np.arange(len(previous)), index=previous)
    tau = float(kendalltau(np.arange(len(current)), position.loc[current].to_numpy()).statistic) if len(current) > 1 else 1.0
    return Moved(new, min(window, len(current)), tau if np.isfinite(tau) else 1.0)


def next_precision(next_predictions: np.ndarray, evidence_predictions: np.ndarray, evidence_verdicts: np.ndarray,
                   *, recent: Optional[int] = None, level: float = DEFAULT_LEVEL) -> Estimate:
    """Precision of the next picks from the recent picks' verdicts and the model's predicted drop.

    The rate at the recent picks has the Jeffreys posterior Beta(H + ½, M − H + ½); the next
    picks' rate is that times ``Q_N / Q_B`` (mean prediction of the next / of the recent picks,
    capped at 1); the interval is the predictive one for the realised share among the
    ``len(next_predictions)`` next picks, integrated over the posterior.

    ``recent``: the order's precision drifts down as the reviewer works through it faster than the
    model's predictions say (its top is used up), so the long window alone lags: with ``recent``, the
    point comes from the last ``recent`` picks and the interval spans both windows' intervals.
    """
    whole = _predicted_share(next_predictions, evidence_predictions, evidence_verdicts, level)
    if recent is None or recent >= len(evidence_verdicts):
        return whole
    latest = _predicted_share(next_predictions, evidence_predictions[-recent:], evidence_verdicts[-recent:], level)
    return Estimate(latest.flagged, latest.precision, min(whole.low, latest.low), max(whole.high, latest.high),
                    f"{latest.source}; the interval spans the last {len(evidence_verdicts)} picks' estimate too",
                    checked=latest.checked, level=level)


def _predicted_share(next_predictions: np.ndarray, evidence_predictions: np.ndarray, evidence_verdicts: np.ndarray,
                     level: float, grid: int = 400) -> Estimate:
    """:func:`next_precision` from one window of evidence (``grid`` quantiles of the posterior)."""
    m, hits = len(evidence_verdicts), int(np.sum(evidence_verdicts))
    ratio = float(np.mean(next_predictions)) / max(float(np.mean(evidence_predictions)), 1e-9)
    quantiles = beta.ppf((np.arange(grid) + 0.5) / grid, hits + 0.5, m - hits + 0.5)
    rates = np.clip(quantiles * ratio, 0.0, 1.0)
    n_next = len(next_predictions)
    pmf = binom.pmf(np.arange(n_next + 1)[None, :], n_next, rates[:, None]).mean(axis=0)
    cdf = np.cumsum(pmf)
    tail = (1.0 - level) / 2.0
    low = int(np.searchsorted(cdf, tail)) / n_next
    high = int(np.searchsorted(cdf, 1.0 - tail)) / n_next
    point = float(np.clip((hits + 0.5) / (m + 1.0) * ratio, 0.0, 1.0))
    return Estimate(n_next, point, min(low, point), max(high, point),
                    f"{hits} problems in the model's last {m} picks, times its predicted drop ({ratio:.2f})",
                    checked=m, level=level)


# ----------------------------------------------------------------------------- the store side


def pick_of(source: str) -> str:
    """``detector``/``model``/``random`` for a decision made from the queue, ``other`` for anything else."""
    source = str(source or "")
    return source[len(SOURCE_PREFIX):] if source.startswith(SOURCE_PREFIX) else "other"


def live_decisions(history: pd.DataFrame) -> pd.DataFrame:
    """The current decision per sample with its ``source``, oldest first, from a DecisionStore history.

    (``DecisionStore.latest`` leaves ``source`` out; the queue needs it to tell its picks apart.)
    """
    undone = set(history.loc[history["action"] == "undo", "undoes"].dropna().astype(int))
    live = history[(history["action"] != "undo") & ~history["id"].isin(undone)]
    return live.drop_duplicates("path", keep="last").sort_values("id").reset_index(drop=True)


def refit_log_path(store_path: Path | str) -> Path:
    """The JSON-lines refit record beside a DecisionStore file (``reviews.sqlite`` -> ``reviews.queue.jsonl``)."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".queue.jsonl")


def refit_record(plan: QueuePlan, fingerprint: str, config: QueueConfig, last_decision_id: int) -> dict:
    """One JSON-able line: the model in force, its inputs and settings, what it changed and claims."""
    return {
        "fingerprint": fingerprint, "ts": time.time(), "fitted_on_verdicts": plan.fitted_on,
        "last_decision_id": int(last_decision_id), "config": asdict(config),
        "model": plan.model.describe() if plan.model is not None else None, "inputs": list(plan.inputs),
        "moved": asdict(plan.moved) if plan.moved is not None else None,
        "estimate": plan.estimate.summary() if plan.estimate is not None else None,
    }


def append_refit_record(path: Path | str, record: dict) -> bool:
    """Append ``record`` unless this fingerprint's refit on this many verdicts is already the last one logged."""
    path = Path(path)
    if path.exists():
        for line in reversed(path.read_text().splitlines()):
            last = json.loads(line)
            if last["fingerprint"] == record["fingerprint"]:
                if last["fitted_on_verdicts"] == record["fitted_on_verdicts"]:
                    return False
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return True
