"""Strategies x keep ratios -> held-out accuracy curves, every training run cached by its content.

For each keep ratio, each strategy picks its subset of the training split, the proxy trains on
it for the same number of epochs, and the held-out accuracy is recorded; training on all of it
(``full``) and class-balanced random subsets over several seeds are the baselines every pruning
method must beat.  ``dynamic`` (a new subset per epoch) and ``adapruner`` (a learned mask) are
training modes, compared at the same per-epoch budget.

A run's cache key is what determines its result: the training data (dataset fingerprint and
split), the exact subset (a hash of its mask) or the dynamic-pruning inputs, and the proxy
settings.  Two strategies that keep the same samples share one run, and widening a grid only
trains the new cells.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from cache.store import ResultStore, make_key
from pruning_core import executors
from pruning_core.datasets import Dataset
from pruning_core.pipeline import DynamicsConfig, ScoreTable, decoded_images
from pruning_core.progress import CancelToken, ProgressCallback, report
from pruning_core.selection import ADAPRUNER_COLUMN, STRATEGIES, SelectionRecipe, run_recipe

from .dynamic import train_with_dynamic_pruning
from .mask_scores import adapruner_info, adapruner_logits
from .runs import TrainingRun, train_on_subset

TRAINING_MODES = {
    "full": "train on every training sample (the reference)",
    "dynamic": "a new subset every epoch: difficulty under the model x label consistency (Yang et al. 2025)",
}
CONSISTENCY_COLUMNS = ("clip.label_alignment", "cleanlab.label_quality", "dynamics.aum")
"""Label-consistency scores dynamic pruning uses, in order of preference (CLIP's is the paper's)."""

RESULT_COLUMNS = ["strategy", "keep", "seed", "n_train", "accuracy", "train_seconds", "samples_trained", "cached"]


@dataclass(frozen=True)
class EvalConfig:
    """How subsets are compared: the proxy (as for the dynamics scores) and the held-out data."""

    proxy: DynamicsConfig = field(default_factory=lambda: DynamicsConfig(folds=0))
    random_seeds: int = 3
    holdout: float = 0.2
    """Fraction of the dataset held out (stratified) when no test set is given."""


@dataclass
class EvalData:
    """The training split with its score rows, and the held-out images and labels."""

    x: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame
    infos: dict
    test_x: np.ndarray
    test_y: np.ndarray
    fingerprint: str
    """Identifies the training split (dataset + test set or holdout) in cache keys."""
    num_classes: int


def heldout_label_ids(test: Dataset, classes: Sequence[str]) -> np.ndarray:
    """The test set's labels as indices into the training classes; unknown classes are an error."""
    index = {c: i for i, c in enumerate(classes)}
    labels = test.samples["label"].astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"the test set has labels the training set does not: {unknown[:10]}"
                         f"{' ...' if len(unknown) > 10 else ''}")
    return labels.map(index).to_numpy(dtype=np.int64)


def prepare_eval_data(
    dataset: Dataset,
    table: ScoreTable,
    store: ResultStore,
    config: EvalConfig,
    *,
    test: Optional[Dataset] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> EvalData:
    """Decode (cached) and split: the whole dataset trains when a test set is given, else a holdout."""
    if config.proxy.arch != "resnet9":
        raise ValueError("subset evaluation trains the image proxy: use arch 'resnet9'")
    x = decoded_images(dataset, config.proxy.image_size, store, progress=progress, cancel=cancel)
    y = dataset.label_ids
    train_idx: slice | np.ndarray = slice(None)  # with a test set the whole dataset trains
    if test is not None:
        test_x = decoded_images(test, config.proxy.image_size, store, progress=progress, cancel=cancel)
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
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}|{split}".encode()).hexdigest()[:24]
    return EvalData(x=x[train_idx], y=y[train_idx], frame=frame, infos=dict(table.infos),
                    test_x=test_x, test_y=test_y, fingerprint=fingerprint, num_classes=len(dataset.classes))


@dataclass(frozen=True)
class RunSpec:
    strategy: str
    keep: float
    seed: int


def grid_runs(strategies: Iterable[str], keeps: Iterable[float], config: EvalConfig) -> list[RunSpec]:
    """The runs of a grid: the full-data reference, then every strategy at every ratio (random over seeds)."""
    base = config.proxy.seed
    runs = [RunSpec("full", 1.0, base)]
    for keep in sorted(set(float(k) for k in keeps)):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep ratios must be fractions in (0, 1]; got {keep}")
        for strategy in strategies:
            if strategy not in STRATEGIES and strategy not in TRAINING_MODES:
                raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join([*STRATEGIES, 'dynamic'])}")
            if strategy == "full":
                continue
            seeds = range(base, base + config.random_seeds) if strategy == "random" else [base]
            runs.extend(RunSpec(strategy, keep, s) for s in seeds)
    return runs


def consistency_column(frame: pd.DataFrame) -> Optional[str]:
    return next((c for c in CONSISTENCY_COLUMNS if c in frame), None)


def _mask_hash(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.size).encode()).hexdigest()[:24]


def _subset_mask(spec: RunSpec, data: EvalData, config: EvalConfig, store: ResultStore, weights, balance: bool,
                 progress, cancel) -> np.ndarray:
    if spec.strategy == "full":
        return np.ones(len(data.y), dtype=bool)
    frame, infos = data.frame, data.infos
    if spec.strategy == "adapruner":
        logits = adapruner_logits(data.x, data.y, spec.keep, config.proxy, store, fingerprint=data.fingerprint,
                                  num_classes=data.num_classes, progress=progress, cancel=cancel)
        frame = frame.assign(**{ADAPRUNER_COLUMN: logits})
        infos = {**infos, ADAPRUNER_COLUMN: adapruner_info(spec.keep)}
    recipe = SelectionRecipe(keep=spec.keep, strategy=spec.strategy, weights=weights, balance=balance, seed=spec.seed)
    return run_recipe(frame, infos, recipe)


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
    train = dict(epochs=proxy.epochs, seed=spec.seed, device=proxy.device, arch=proxy.arch, width=proxy.width,
                 batch_size=proxy.batch_size, num_classes=data.num_classes)
    params: dict = {**proxy.training_params(), "seed": spec.seed}
    if spec.strategy == "dynamic":
        column = consistency_column(data.frame)
        consistency = data.frame[column].to_numpy(dtype=np.float64) if column else None
        params |= {"mode": "dynamic", "ratio": spec.keep, "consistency": column,
                   "consistency_hash": hashlib.sha256(consistency.tobytes()).hexdigest()[:16] if column else None}
    else:
        mask = _subset_mask(spec, data, config, store, weights, balance, progress, cancel)
        params |= {"mode": "static", "subset": _mask_hash(mask)}
    key = make_key("subset-eval", data.fingerprint, params)
    with executors.exclusive(store.partial_root / f"{key}.lock"):  # one training per key, even on a cluster
        entry = store.load(key)
        cached = entry is not None
        if entry is None:
            if spec.strategy == "dynamic":
                run: TrainingRun = train_with_dynamic_pruning(data.x, data.y, spec.keep, consistency=consistency,
                                                              test_x=data.test_x, test_y=data.test_y,
                                                              progress=progress, cancel=cancel, **train)
            else:
                run = train_on_subset(data.x, data.y, mask, test_x=data.test_x, test_y=data.test_y,
                                      progress=progress, cancel=cancel, **train)
            entry = store.save(key, arrays={"heldout_probs": run.heldout_probs},
                               meta={"step": "subset-eval", "fingerprint": data.fingerprint, "params": params,
                                     "accuracy": run.accuracy, "n_train": run.n_train,
                                     "samples_trained": run.samples_trained, "train_seconds": run.train_seconds,
                                     "train": run.meta})
    m = entry.meta
    return {"strategy": spec.strategy, "keep": spec.keep, "seed": spec.seed, "n_train": m["n_train"],
            "accuracy": m["accuracy"], "train_seconds": m["train_seconds"],
            "samples_trained": m["samples_trained"], "cached": cached}


def evaluate_pruning(
    dataset: Dataset,
    table: ScoreTable,
    store: ResultStore,
    *,
    strategies: Sequence[str],
    keeps: Sequence[float],
    config: EvalConfig = EvalConfig(),
    test: Optional[Dataset] = None,
    weights: Optional[dict] = None,
    balance: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> pd.DataFrame:
    """One row per run (see ``RESULT_COLUMNS``); cancelling keeps every finished run in the cache."""
    data = prepare_eval_data(dataset, table, store, config, test=test, progress=progress, cancel=cancel)
    runs = grid_runs(strategies, keeps, config)
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
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread of accuracy per strategy and ratio (random has one row per seed)."""
    grouped = results.groupby(["strategy", "keep"], sort=True)
    out = grouped.agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), runs=("accuracy", "size"),
                      n_train=("n_train", "first"), train_seconds=("train_seconds", "mean"))
    return out.reset_index().fillna({"accuracy_std": 0.0})


def best_configuration(results: pd.DataFrame, keep: Optional[float] = None) -> pd.Series:
    """The strategy and ratio with the highest mean accuracy (among pruning choices, at ``keep`` if given)."""
    summary = summarise(results)
    candidates = summary[summary["strategy"].isin(STRATEGIES)]
    if keep is not None:
        candidates = candidates[np.isclose(candidates["keep"], keep)]
    if candidates.empty:
        raise ValueError("no pruning strategy in these results" + (f" at keep={keep}" if keep is not None else ""))
    return candidates.loc[candidates["accuracy"].idxmax()]
