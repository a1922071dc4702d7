"""Strategies x keep ratios -> held-out accuracy curves, every training run cached by its content.

For each keep ratio, each strategy picks its subset of the training split, the proxy trains on
it, and the held-out accuracy is recorded; training on all of it (``full``) and class-balanced
random subsets are the baselines every pruning method must beat.  ``dynamic`` (a new subset per
epoch) and ``adapruner`` (a learned mask) are training modes, compared at the same budget.

What makes the curves mean something:

* **the training budget** (:data:`~pruning_core.subset_training.runs.BUDGETS`): by default every
  run takes the optimiser steps of full-data training, so accuracy differs by *which* samples were
  kept, not by how long the model trained; no run gets fewer than a floor of steps per epoch;
* **seeds**: every strategy runs over ``EvalConfig.seeds`` seeds (the subset's and the training's),
  and :func:`summarise` marks a strategy as beating random or full data only where a one-sided
  Welch t-test (its own degrees of freedom) on at least :data:`MIN_SEEDS_FOR_MARK` seeds a side
  says so at :data:`MARK_ALPHA`, with each side's spread floored at :data:`SPREAD_FLOOR`;
* **the proxy is named**: the image ResNet-9 the dynamics scores were recorded with, or a probe
  (``arch`` ``linear``/``mlp``) on cached CLIP embeddings that answers in seconds on a CPU.

A run's cache key is what determines its result: the training data (dataset fingerprint, split
and input), the exact subset (a hash of its mask) or the dynamic-pruning inputs, the proxy
settings and the budget.  Two strategies that keep the same samples share one run, and widening a
grid only trains the new cells.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.runtime import executors
from pruning_core.data.datasets import Dataset, decoded_images
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.dynamics.probe import PROXY_PROBE
from pruning_core.scoring.pipeline import ClipConfig, clip_embeddings
from pruning_core.runtime.planner import DynamicsPlan, Rates, format_seconds, plan_dynamics, planned_batch_size
from pruning_core.runtime.progress import CancelToken, ProgressCallback, report
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.selection import (ADAPRUNER_COLUMN, STRATEGIES, SelectionRecipe, keep_count, run_recipe,
                                    strategy_relabels)

from .dynamic import train_with_dynamic_pruning
from .mask_scores import adapruner_info, adapruner_logits
from .runs import TrainingRun, run_schedule, train_on_subset

TRAINING_MODES = {
    "full": "train on every training sample (the reference)",
    "dynamic": "a new subset every epoch: difficulty under the model x label consistency (Yang et al. 2025)",
}
CONSISTENCY_COLUMNS = ("clip.label_alignment", "cleanlab.label_quality", "dynamics.aum")
"""Label-consistency scores dynamic pruning uses, in order of preference (CLIP's is the paper's)."""

DEFAULT_STRATEGIES = ("easiest", "ccs", "random")
DEFAULT_KEEPS = (0.3, 0.5, 0.7, 0.9)
"""The grid the CLI and the Evaluate page start from."""

RESULT_COLUMNS = ["strategy", "keep", "seed", "n_train", "accuracy", "steps", "batch_size", "epochs",
                  "samples_trained", "train_seconds", "cached"]


@dataclass(frozen=True)
class EvalConfig:
    """How subsets are compared: the proxy (as for the dynamics scores), the budget, the seeds, the held-out data."""

    proxy: DynamicsConfig = field(default_factory=lambda: DynamicsConfig(folds=0))
    budget: str = "equal_steps"
    """What each subset trains for, see :data:`~pruning_core.subset_training.runs.BUDGETS`."""
    seeds: int = 2
    """Runs per strategy and ratio (the subset's and the training's seed): the spread on the curves."""
    holdout: float = 0.2
    """Fraction of the dataset held out (stratified) when no test set is given."""
    time_budget_s: Optional[float] = 180.0
    """Seconds the whole grid may take: :func:`plan_grid` sizes the image proxy to fit (None: as set)."""

    @property
    def is_probe(self) -> bool:
        """The proxy is a probe on CLIP embeddings rather than the image ResNet-9."""
        return self.proxy.arch != "resnet9"


@dataclass
class EvalData:
    """The training split with its score rows, and the held-out inputs and labels."""

    x: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame
    infos: dict
    test_x: np.ndarray
    test_y: np.ndarray
    fingerprint: str
    """Identifies the training split and its input (dataset, test set or holdout, images or embeddings)."""
    num_classes: int
    proxy: str
    """What the curves were measured with, for the page and the CLI."""


def heldout_label_ids(test: Dataset, classes: Sequence[str]) -> np.ndarray:
    """The test set's labels as indices into the training classes; unknown classes are an error."""
    index = {c: i for i, c in enumerate(classes)}
    labels = test.samples["label"].astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"the test set has labels the training set does not: {unknown[:10]}"
                         f"{' ...' if len(unknown) > 10 else ''}")
    return labels.map(index).to_numpy(dtype=np.int64)


def describe_proxy(config: EvalConfig, clip: Optional[ClipConfig] = None) -> str:
    """The evaluation model in words, e.g. 'ResNet-9 width 16 at 16 px' or 'linear probe on ViT-B-32 embeddings'."""
    p = config.proxy
    if not config.is_probe:
        return f"ResNet-9 width {p.width} at {p.image_size} px"
    return f"{p.arch} probe on {clip.model if clip else 'CLIP'} image embeddings"


def _inputs(dataset: Dataset, config: EvalConfig, store: ResultStore, clip: Optional[ClipConfig], progress,
            cancel) -> tuple[np.ndarray, str]:
    """The proxy's input for every sample of ``dataset`` (decoded images or CLIP embeddings) and its identity."""
    if not config.is_probe:
        size = config.proxy.image_size
        return decoded_images(dataset, size, store, progress=progress, cancel=cancel), f"images{size}"
    if clip is None:
        raise ValueError(f"the {config.proxy.arch!r} probe trains on CLIP embeddings: give a CLIP model too")
    emb = clip_embeddings(dataset, clip, store, progress=progress, cancel=cancel)
    return np.nan_to_num(np.asarray(emb.image, dtype=np.float32)), json.dumps(emb.identity, sort_keys=True)


def prepare_eval_data(
    dataset: Dataset,
    table: ScoreTable,
    store: ResultStore,
    config: EvalConfig,
    *,
    test: Optional[Dataset] = None,
    clip: Optional[ClipConfig] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> EvalData:
    """Inputs (cached) and split: the whole dataset trains when a test set is given, else a holdout."""
    x, input_id = _inputs(dataset, config, store, clip, progress, cancel)
    y = dataset.label_ids
    train_idx: slice | np.ndarray = slice(None)  # with a test set the whole dataset trains
    if test is not None:
        test_x, _ = _inputs(test, config, store, clip, progress, cancel)
        test_y = heldout_label_ids(test, dataset.classes)
        split = f"test:{test.fingerprint}"
    else:
        if not 0.0 < config.holdout < 1.0:
            raise ValueError("holdout must be a fraction in (0, 1) when no test set is given")
        train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=config.holdout, stratify=y,
                                               random_state=config.proxy.seed)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        test_x, test_y = x[test_idx], y[test_idx]
        split = f"holdout:{config.holdout}:{config.proxy.seed}"
    frame = table.frame.iloc[train_idx].reset_index(drop=True)
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}|{split}|{input_id}".encode()).hexdigest()[:24]
    return EvalData(x=x[train_idx], y=y[train_idx], frame=frame, infos=dict(table.infos),
                    test_x=test_x, test_y=test_y, fingerprint=fingerprint, num_classes=len(dataset.classes),
                    proxy=describe_proxy(config, clip))


@dataclass(frozen=True)
class RunSpec:
    strategy: str
    keep: float
    seed: int


def grid_runs(strategies: Iterable[str], keeps: Iterable[float], config: EvalConfig) -> list[RunSpec]:
    """The runs of a grid: full data, then every strategy at every ratio, each over ``config.seeds`` seeds."""
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {config.seeds}")
    seeds = range(config.proxy.seed, config.proxy.seed + config.seeds)
    runs = [RunSpec("full", 1.0, s) for s in seeds]
    for keep in sorted(set(float(k) for k in keeps)):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep ratios must be fractions in (0, 1]; got {keep}")
        for strategy in strategies:
            if strategy not in STRATEGIES and strategy not in TRAINING_MODES:
                raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join([*STRATEGIES, 'dynamic'])}")
            if strategy != "full":
                runs.extend(RunSpec(strategy, keep, s) for s in seeds)
    return runs


@dataclass(frozen=True)
class GridPlan:
    """What an Evaluate grid will train and about how long it will take, shown before it starts."""

    config: EvalConfig
    runs: int
    proxy: str
    proxy_plan: DynamicsPlan
    batch_size: int
    """Every run's batch (:func:`grid_batch_size`)."""

    @property
    def estimate_s(self) -> float:
        return self.proxy_plan.estimate_s

    @property
    def fits(self) -> bool:
        return self.proxy_plan.fits

    def describe(self) -> str:
        p = self.config.proxy
        each = (f"each with the steps of {p.epochs} full-data epochs" if self.config.budget == "equal_steps"
                else f"{p.epochs} epochs each")
        line = f"{self.runs} training runs of a {self.proxy}, {each} at batch {self.batch_size}"
        line += (f", on {self.proxy_plan.device}: about {format_seconds(self.estimate_s)} "
                 f"(measured {self.proxy_plan.rates.train:,.0f} training samples/s)")
        budget = self.config.time_budget_s
        if budget is not None:
            line += f"; budget {format_seconds(budget)}" + ("" if self.fits else " — over budget")
        return line


def grid_batch_size(batch_size: int, keeps: Iterable[float], n_train: int) -> int:
    """One batch for every run of a grid: the largest that still gives its smallest subset the floor of steps
    per epoch.  Under equal steps every run then also sees the same number of samples, i.e. costs the same."""
    smallest = min((keep_count(k, n_train) for k in keeps), default=n_train)
    return planned_batch_size(batch_size, max(1, min(smallest, n_train)))


def grid_seconds(proxy: DynamicsConfig, rates: Rates, *, runs: Sequence[RunSpec], n_train: int, n_test: int,
                 budget: str) -> float:
    """Seconds to train and test every run (cached runs included): samples each run trains / measured rates."""
    total = 0.0
    batch = grid_batch_size(proxy.batch_size, {spec.keep for spec in runs}, n_train)
    for spec in runs:
        n = keep_count(spec.keep, n_train)
        schedule = run_schedule(max(n, 1), n_full=n_train, epochs=proxy.epochs, batch_size=batch, budget=budget)
        total += schedule.total_steps * schedule.batch_size / rates.train + n_test / rates.eval
    fits = {spec.keep for spec in runs if _fitted_per_ratio(spec.strategy)}  # one mask fit per ratio
    return total + len(fits) * proxy.epochs * n_train / rates.train


def plan_grid(
    config: EvalConfig,
    *,
    strategies: Sequence[str],
    keeps: Sequence[float],
    n_samples: int,
    n_test: Optional[int],
    num_classes: int,
    fixed: Iterable[str] = (),
    clip: Optional[ClipConfig] = None,
    store: Optional[ResultStore] = None,
    progress: Optional[ProgressCallback] = None,
) -> GridPlan:
    """The image proxy's settings (resolution, width, epochs, batch) that fit ``config.time_budget_s``.

    The same throughput probe and rungs as the dynamics step (:func:`pruning_core.runtime.planner.plan_dynamics`),
    with the grid's cost: every run's training samples under the chosen budget, plus its test pass.
    Settings named in ``fixed`` are kept; a probe on embeddings is not resized, only estimated.
    ``n_test`` is the test set's size, or None when ``config.holdout`` of the ``n_samples`` is held out.
    """
    if n_test is None:
        n_test = round(n_samples * config.holdout)
        n_samples -= n_test
    n_train = n_samples
    runs = grid_runs(strategies, keeps, config)
    smallest = min(keep_count(spec.keep, n_train) for spec in runs)
    proxy = config.proxy
    if config.is_probe or "batch_size" in fixed:  # not planned: measure the batch every run will use
        proxy = replace(proxy, batch_size=grid_batch_size(proxy.batch_size, keeps, n_train))
    plan = plan_dynamics(
        proxy, n_train, num_classes=num_classes, budget_s=config.time_budget_s, fixed=(*fixed, "folds"),
        store=store, progress=progress, batch_samples=smallest, probe=PROXY_PROBE,
        estimate=lambda candidate, rates: grid_seconds(candidate, rates, runs=runs, n_train=n_train, n_test=n_test,
                                                       budget=config.budget),
    )
    planned = replace(config, proxy=plan.config)
    return GridPlan(planned, len(runs), describe_proxy(planned, clip), plan,
                    grid_batch_size(plan.config.batch_size, keeps, n_train))


def _fitted_per_ratio(strategy: str) -> bool:
    return strategy in STRATEGIES and STRATEGIES[strategy].fitted_per_ratio


def consistency_column(frame: pd.DataFrame) -> Optional[str]:
    return next((c for c in CONSISTENCY_COLUMNS if c in frame), None)


def _mask_hash(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.size).encode()).hexdigest()[:24]


def _subset_mask(spec: RunSpec, data: EvalData, config: EvalConfig, store: ResultStore, weights, balance: bool,
                 progress, cancel) -> tuple[np.ndarray, np.ndarray]:
    """The kept mask and the training labels (a relabelling strategy's fixes applied, else the given ones)."""
    if spec.strategy == "full":
        return np.ones(len(data.y), dtype=bool), data.y
    frame, infos = data.frame, data.infos
    if _fitted_per_ratio(spec.strategy):  # AdaPruner, the one registered strategy whose column is learned per ratio
        logits = adapruner_logits(data.x, data.y, spec.keep, config.proxy, store, fingerprint=data.fingerprint,
                                  num_classes=data.num_classes, progress=progress, cancel=cancel)
        frame = frame.assign(**{ADAPRUNER_COLUMN: logits})
        infos = {**infos, ADAPRUNER_COLUMN: adapruner_info(spec.keep)}
    recipe = SelectionRecipe(keep=spec.keep, strategy=spec.strategy, weights=weights, balance=balance, seed=spec.seed)
    mask = run_recipe(frame, infos, recipe)
    return mask, relabelled_ids(frame, data.y, strategy_relabels(frame, recipe, mask))


def relabelled_ids(frame: pd.DataFrame, y: np.ndarray, relabels: dict[str, str]) -> np.ndarray:
    """``y`` with ``relabels`` (path -> class name) applied; class ids read off the (label, id) pairs of ``frame``."""
    if not relabels:
        return y
    ids = dict(zip(frame["label"].astype(str), y.tolist()))
    new = frame["path"].astype(str).map(relabels)
    unknown = sorted(set(new.dropna()) - set(ids))
    if unknown:
        raise ValueError(f"suggested label(s) {unknown} name no class of the training split")
    out = y.copy()
    fixed = new.notna().to_numpy()
    out[fixed] = new[fixed].map(ids).to_numpy(dtype=y.dtype)
    return out


def run_one(
    spec: RunSpec,
    data: EvalData,
    config: EvalConfig,
    store: ResultStore,
    *,
    weights: Optional[dict] = None,
    balance: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> dict:
    """Train (or look up) one cell of the grid; returns its result row."""
    proxy = config.proxy
    train = {**proxy.trainer_options(), "seed": spec.seed, "budget": config.budget, "num_classes": data.num_classes}
    params: dict = {**proxy.training_params(), "seed": spec.seed, "budget": config.budget}
    if spec.strategy == "dynamic":
        column = consistency_column(data.frame)
        consistency = data.frame[column].to_numpy(dtype=np.float64) if column else None
        params |= {"mode": "dynamic", "ratio": spec.keep, "consistency": column,
                   "consistency_hash": hashlib.sha256(consistency.tobytes()).hexdigest()[:16] if column else None}
    else:
        mask, y = _subset_mask(spec, data, config, store, weights, balance, progress, cancel)
        params |= {"mode": "static", "subset": _mask_hash(mask)}
        if y is not data.y:  # a relabelling strategy: the fixed labels are part of what trains
            params |= {"labels": hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:24]}
    step = CachedStep("subset-eval", data.fingerprint, params)

    def train_run() -> Computed:
        if spec.strategy == "dynamic":
            run: TrainingRun = train_with_dynamic_pruning(data.x, data.y, spec.keep, consistency=consistency,
                                                          test_x=data.test_x, test_y=data.test_y,
                                                          progress=progress, cancel=cancel, **train)
        else:
            run = train_on_subset(data.x, y, mask, test_x=data.test_x, test_y=data.test_y,
                                  progress=progress, cancel=cancel, **train)
        return Computed(arrays={"heldout_probs": run.heldout_probs},
                        meta={"accuracy": run.accuracy, "n_train": run.n_train, "samples_trained": run.samples_trained,
                              "train_seconds": run.train_seconds, "train": run.meta})

    with executors.exclusive(store.partial_root / f"{step.key}.lock"):  # one training per key, even on a cluster
        cached = step.is_cached(store)
        entry = step.run(store, train_run)
    m = entry.meta
    return {"strategy": spec.strategy, "keep": spec.keep, "seed": spec.seed, "n_train": m["n_train"],
            "accuracy": m["accuracy"], "steps": m["train"]["steps"], "batch_size": m["train"]["batch_size"],
            "epochs": m["samples_trained"] / m["n_train"], "samples_trained": m["samples_trained"],
            "train_seconds": m["train_seconds"], "cached": cached}


def evaluate_pruning(
    dataset: Dataset,
    table: ScoreTable,
    store: ResultStore,
    *,
    strategies: Sequence[str],
    keeps: Sequence[float],
    config: EvalConfig = EvalConfig(),
    test: Optional[Dataset] = None,
    clip: Optional[ClipConfig] = None,
    weights: Optional[dict] = None,
    balance: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> pd.DataFrame:
    """One row per run (see ``RESULT_COLUMNS``); cancelling keeps every finished run in the cache.

    ``config`` runs as given (its batch lowered by :func:`grid_batch_size`): plan it first with
    :func:`plan_grid` to fit a time budget.  ``clip`` is
    needed when the proxy is a probe on CLIP embeddings.  ``results.attrs["proxy"]`` names the proxy.
    """
    data = prepare_eval_data(dataset, table, store, config, test=test, clip=clip, progress=progress, cancel=cancel)
    runs = grid_runs(strategies, keeps, config)
    batch = grid_batch_size(config.proxy.batch_size, {r.keep for r in runs}, len(data.y))
    config = replace(config, proxy=replace(config.proxy, batch_size=batch))
    labels = ["full data" if r.strategy == "full" else f"{r.strategy} keep {r.keep:.0%} seed {r.seed}" for r in runs]
    finished = 0

    def started(i: int) -> Optional[ProgressCallback]:
        head = f"run {i + 1}/{len(runs)}: {labels[i]}"
        report(progress, "evaluate", finished, len(runs), head)
        if progress is None:
            return None
        return lambda p: report(progress, "evaluate", finished, len(runs), f"{head} - {p.stage} {p.done}/{p.total}")

    def ended(i: int, row: dict) -> None:
        nonlocal finished
        finished += 1
        report(progress, "evaluate", finished, len(runs), f"{labels[i]}: done")

    # Each cell saves its own entry as it ends, so a cancelled grid keeps every finished run.
    rows = executors.current().map(
        run_one, runs, common=dict(data=data, config=config, store=store, weights=weights, balance=balance),
        needs=executors.Needs.for_device(config.proxy.device), on_start=started, on_done=ended, cancel=cancel,
    )
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results.attrs.update(proxy=data.proxy, budget=config.budget)
    return results


SUMMARY_COLUMNS = ["strategy", "keep", "accuracy", "accuracy_std", "accuracy_sem", "runs", "n_train", "steps",
                   "epochs", "train_seconds", "p_vs_random", "p_vs_full", "beats_random", "beats_full"]

MIN_SEEDS_FOR_MARK = 3
"""Runs a side needs before a difference is marked: two runs give a spread with one degree of freedom,
whose t quantile (6.3 at 5 %) makes any mark from them a coin toss on the spread itself."""
MARK_ALPHA = 0.05
"""One-sided level of the Welch t-test behind a mark."""
SPREAD_FLOOR = 0.005
"""Smallest standard deviation of accuracy a side is credited with (half a point): seeds that agree to the
last digit (a deterministic proxy, a cached run) have not measured the noise, so they cannot shrink it to 0."""


def marks_possible(summary: pd.DataFrame) -> bool:
    """Whether the seeds in ``summary`` are enough for :func:`summarise` to mark any difference."""
    return bool(len(summary)) and int(summary["runs"].max()) >= MIN_SEEDS_FOR_MARK


def welch_p_greater(a: pd.Series, b: pd.Series) -> float:
    """One-sided p-value of "mean a > mean b" by Welch's t-test (Welch-Satterthwaite degrees of freedom).

    ``a``/``b`` are summary rows (``accuracy``, ``accuracy_std``, ``runs``); NaN where either side has
    fewer than :data:`MIN_SEEDS_FOR_MARK` runs, or where every run of a side gave the same accuracy
    (identical seeds measure no noise: no difference can be told from them)."""
    from scipy import stats

    if min(a["runs"], b["runs"]) < MIN_SEEDS_FOR_MARK or min(a["accuracy_std"], b["accuracy_std"]) <= 0:
        return float("nan")
    va = max(a["accuracy_std"], SPREAD_FLOOR) ** 2 / a["runs"]
    vb = max(b["accuracy_std"], SPREAD_FLOOR) ** 2 / b["runs"]
    t = (a["accuracy"] - b["accuracy"]) / np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (a["runs"] - 1) + vb ** 2 / (b["runs"] - 1))
    return float(stats.t.sf(t, dof))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and standard error of accuracy per strategy and ratio, with significance markers.

    ``p_vs_random`` / ``p_vs_full``: :func:`welch_p_greater` against random at the same ratio / full
    data, computed from exactly the seeds in ``results`` (NaN where it cannot be told);
    ``beats_random`` / ``beats_full``: that p-value is below :data:`MARK_ALPHA`.
    """
    grouped = results.groupby(["strategy", "keep"], sort=True)
    out = grouped.agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), runs=("accuracy", "size"),
                      n_train=("n_train", "first"), steps=("steps", "mean"), epochs=("epochs", "mean"),
                      train_seconds=("train_seconds", "mean")).reset_index()
    out["accuracy_std"] = out["accuracy_std"].fillna(0.0)
    out["accuracy_sem"] = out["accuracy_std"] / np.sqrt(out["runs"])
    random = out[out["strategy"] == "random"].set_index("keep")
    full = out[out["strategy"] == "full"]

    def p_greater(row: pd.Series, ref: Optional[pd.Series]) -> float:
        return float("nan") if ref is None else welch_p_greater(row, ref)

    out["p_vs_random"] = [p_greater(row, random.loc[row["keep"]] if row["strategy"] not in ("random", "full")
                                    and row["keep"] in random.index else None) for _, row in out.iterrows()]
    out["p_vs_full"] = [p_greater(row, full.iloc[0] if row["strategy"] != "full" and len(full) else None)
                        for _, row in out.iterrows()]
    out["beats_random"] = out["p_vs_random"] < MARK_ALPHA  # NaN compares False: no mark
    out["beats_full"] = out["p_vs_full"] < MARK_ALPHA
    return out[SUMMARY_COLUMNS]


def best_configuration(results: pd.DataFrame, keep: Optional[float] = None) -> pd.Series:
    """The strategy and ratio with the highest mean accuracy (among pruning choices, at ``keep`` if given)."""
    summary = summarise(results)
    candidates = summary[summary["strategy"].isin(STRATEGIES)]
    if keep is not None:
        candidates = candidates[np.isclose(candidates["keep"], keep)]
    if candidates.empty:
        raise ValueError("no pruning strategy in these results" + (f" at keep={keep}" if keep is not None else ""))
    return candidates.loc[candidates["accuracy"].idxmax()]
