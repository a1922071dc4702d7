"""Prune or distil: a fresh student trained on each K-pair option, scored by retrieval on a clean held-out set.

The options at one size K (every one through :func:`pruning_core.distill.student.train_student`, the same
steps and batch, several seeds):

* ``distilled``: the MDW set (its learned correspondence, pair weights and step size, as MTT evaluates);
* ``distilled, no correspondence``: the ablation (a set distilled with a fixed diagonal);
* ``random``: K real pairs drawn uniformly (a new draw per seed);
* ``cleanest``: the K real pairs PruneScope ranks cleanest: strategy ``easiest`` of ``selection.STRATEGIES``
  on ``clip.caption_alignment`` + ``clip.diversity`` (likely mismatches and redundant pairs last);
* ``all``: every noisy pair (one size: N).

Real pairs train at ``CompareConfig.real_lr``; every run is one cached entry (``distill-eval``), so a page or a
bench that asks again reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.data.datasets import Dataset
from pruning_core.distill.job import COVERAGE, COVERAGE_OF_MATCHED, DistilledSet, DistillInputs
from pruning_core.distill.mdw import distilled_pairs
from pruning_core.distill.student import (EVAL_BATCH, EVAL_MOMENTUM, EVAL_STEPS, REAL_LR, PairSet, retrieval_recall,
                                          train_student)
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report
from pruning_core.scoring.pipeline import ClipConfig
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.selection import select

CLEANEST_WEIGHTS = {"clip.caption_alignment": 1.0, "clip.diversity": 1.0}
"""What "the pairs PruneScope ranks cleanest" weighs (ranks combined by ``selection.combined_score``)."""
METRICS = ("i2t@1", "i2t@5", "t2i@1", "t2i@5")


@dataclass(frozen=True)
class CompareConfig:
    """How each option's student is trained and how often (defaults live here only)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = EVAL_STEPS
    batch_size: int = EVAL_BATCH
    real_lr: float = REAL_LR
    """SGD step (momentum 0.9) for real pairs; a distilled set brings its learned one."""

    def as_dict(self) -> dict:
        return asdict(self)


def cleanest_rows(table: ScoreTable, inputs: DistillInputs, k: int) -> np.ndarray:
    """Indices into ``inputs`` of the K pairs PruneScope ranks cleanest (pairs ``inputs`` dropped are never kept)."""
    frame = table.frame
    removed = np.ones(len(frame), dtype=bool)
    removed[inputs.rows] = False
    mask = select(frame, table.infos, k, strategy="easiest", weights=CLEANEST_WEIGHTS, removed=removed)
    position = np.full(len(frame), -1)
    position[inputs.rows] = np.arange(len(inputs.rows))
    return position[np.flatnonzero(mask)]


def _real(inputs: DistillInputs, index: np.ndarray, lr: float) -> PairSet:
    idx = torch.from_numpy(np.asarray(index, dtype=np.int64))
    return PairSet(inputs.images[idx], inputs.texts[idx], lr=lr)


def _eval_step(option: str, size: int, seed: int, source: str, config: CompareConfig, test: DistillInputs,
               fingerprint: str) -> CachedStep:
    return CachedStep("distill-eval", fingerprint,
                      {"option": option, "size": size, "seed": seed, "source": source, "test": test.fingerprint,
                       "steps": config.steps, "batch_size": config.batch_size, "real_lr": config.real_lr,
                       "momentum": EVAL_MOMENTUM})


def compare_options(inputs: DistillInputs, test: DistillInputs, table: ScoreTable,
                    distilled: Iterable[tuple[str, DistilledSet]], store: ResultStore, *,
                    config: CompareConfig = CompareConfig(), sizes: Iterable[int] = (),
                    progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None) -> pd.DataFrame:
    """One row per (option, size, seed): the four recall figures on ``test``.

    ``distilled`` names each distilled set (``"distilled"``, ``"distilled, no correspondence"``); ``sizes``
    adds random/cleanest at sizes no distilled set has.  Cached per run.
    """
    distilled = list(distilled)
    sizes = sorted({len(d.state.images) for _, d in distilled} | set(sizes))
    jobs: list[tuple[str, int, str, Callable[[int], PairSet]]] = []
    for name, d in distilled:
        jobs.append((name, len(d.state.images), d.key,
                     lambda seed, d=d: distilled_pairs(d.state, learn_correspondence=d.learn_correspondence)))
    for k in sizes:
        jobs.append(("random", k, "uniform", lambda seed, k=k: _real(
            inputs, np.random.default_rng(seed).choice(len(inputs.images), k, replace=False), config.real_lr)))
        jobs.append(("cleanest", k, "easiest:" + ",".join(CLEANEST_WEIGHTS),
                     lambda seed, k=k: _real(inputs, cleanest_rows(table, inputs, k), config.real_lr)))
    jobs.append(("all", len(inputs.images), "all", lambda seed: _real(inputs, np.arange(len(inputs.images)),
                                                                       config.real_lr)))
    rows = []
    total = len(jobs) * len(config.seeds)
    for j, (option, size, source, pairs_for) in enumerate(jobs):
        for s, seed in enumerate(config.seeds):
            check(cancel)
            report(progress, "prune or distil", j * len(config.seeds) + s, total, f"{option} ({size} pairs), seed {seed}")

            def run(pairs_for=pairs_for, seed=seed) -> Computed:
                model = train_student(pairs_for(seed), steps=config.steps, batch_size=config.batch_size, seed=seed,
                                      cancel=cancel)
                return Computed(meta={"recall": retrieval_recall(model, test.images, test.texts, test.captions)})

            entry = _eval_step(option, size, seed, source, config, test, inputs.fingerprint).run(store, run)
            rows.append({"option": option, "size": size, "seed": seed, **entry.meta["recall"]})
    report(progress, "prune or distil", total, total)
    return pd.DataFrame(rows)


def paired_margins(results: pd.DataFrame, metric: str, option: str = "distilled",
                   baselines: Sequence[str] = ("random", "cleanest")) -> pd.DataFrame:
    """``option`` minus each baseline in ``metric``, paired by seed at each size ``option`` was trained at.

    One row per (size, baseline): the difference's mean, its standard error over the seeds both ran and their
    count, and ``verdict`` from a two-sided paired t-test at 5 %: ``"above"`` / ``"below"`` when the mean lies more
    than ``t(0.975, seeds − 1)`` standard errors above / below zero, ``"within"`` otherwise (also when fewer than two
    seeds leave no spread).  Why t and not a fixed two: with three seeds the standard error is itself a guess from two
    degrees of freedom, and "beyond 2 SE" would call 18 % of pure-noise differences a win (the t critical value is 4.3).
    """
    rows = []
    ours = results[results["option"] == option]
    for size, mine in ours.groupby("size"):
        for base in baselines:
            theirs = results[(results["option"] == base) & (results["size"] == size)]
            paired = mine.set_index("seed")[metric].to_frame("mine").join(
                theirs.set_index("seed")[metric].to_frame("theirs"), how="inner")
            if paired.empty:
                continue
            diff = paired["mine"] - paired["theirs"]
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
            mean = float(diff.mean())
            critical = float(stats.t.ppf(0.975, len(diff) - 1)) if len(diff) > 1 else float("nan")
            verdict = "within" if np.isnan(se) or abs(mean) <= critical * se else ("above" if mean > 0 else "below")
            rows.append({"size": int(size), "baseline": base, "difference": mean, "se": se, "seeds": len(diff),
                         "verdict": verdict})
    return pd.DataFrame(rows, columns=["size", "baseline", "difference", "se", "seeds", "verdict"])


def distilled_settings(distilled: DistilledSet) -> str:
    """One line saying which settings made a distilled set and how far its run got (next to any figure of it)."""
    meta, params = distilled.meta, distilled.meta["params"]
    stop = (f"stopped by its {params['budget_s']:g} s budget" if meta["stopped_by"] == "budget"
            else "reached its iteration cap")
    covering = "the pairs that cover the experts' image space"
    start = {COVERAGE_OF_MATCHED: f"{covering}, likely mismatches passed over",
             COVERAGE: covering}.get(params["start"], "the cleanest pairs")
    validation = meta.get("validation") or {}
    share = (f" with {validation['start_pairing_share']:.0%} of its correspondence on the given pairing"
             if params["learn_correspondence"] and "start_pairing_share" in validation else "")
    kept = (f"; kept the {'matched set' if meta['kept'] == 'matched' else 'start'} (validation recall@1 "
            f"{validation['start']:.3f} at the start, at {validation.get('start_step_factor', 1.0):g}× the real pairs' "
            f"step{share}, {validation['matched']:.3f} matched, on {validation['pairs']} "
            "held-out pairs)") if validation else ""
    planned = meta["plan"].get("iterations_after_start_validation", meta["plan"]["iterations"])
    return (f"K = {params['pairs']}: {meta['iterations']} matching iterations of at most {params['iterations']} "
            f"({stop}; ~{planned} planned), expert runs {params['experts']} × "
            f"{params['expert_epochs']} epochs, correspondence learning {'on' if params['learn_correspondence'] else 'off'}"
            f", started from {start}, seed {params['seed']}{kept}")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and run count of every metric per (option, size)."""
    grouped = results.groupby(["option", "size"], sort=False)[list(METRICS)]
    mean = grouped.mean()
    se = grouped.std(ddof=1) / np.sqrt(grouped.count())
    out = mean.join(se.add_suffix(" se"))
    out["runs"] = grouped.size()
    return out.reset_index()


ABLATION = "distilled, no correspondence"


@dataclass(frozen=True)
class PruneOrDistil:
    """The comparison's runs and the distilled sets behind them (by size), with the inputs they came from."""

    results: pd.DataFrame
    distilled: dict[int, DistilledSet]
    inputs: DistillInputs
    ablations: dict[int, DistilledSet] = field(default_factory=dict)
    """The sets distilled with correspondence learning off, by size (when the ablation ran)."""
    config: CompareConfig = CompareConfig()
    """How every student was trained."""


def prune_or_distil(dataset: Dataset, test_dataset: Dataset, clip: ClipConfig, table: ScoreTable, store: ResultStore,
                    *, sizes: Iterable[int],
                    budget_s: float, ablation: bool = False, config: CompareConfig = CompareConfig(),
                    progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None) -> PruneOrDistil:
    """Distil ``dataset`` at each size (``budget_s`` each; cached), then compare against pruning on ``test_dataset``.

    What the Evaluate page's "prune or distil" section and ``bench/bench_distill.py compare`` run.
    """
    from pruning_core.distill.job import distill_dataset, distill_inputs
    from pruning_core.distill.mdw import MDWConfig

    inputs = distill_inputs(dataset, clip, store, progress=progress, cancel=cancel)
    test = distill_inputs(test_dataset, clip, store, progress=progress, cancel=cancel)
    named: list[tuple[str, DistilledSet]] = []
    by_size: dict[int, DistilledSet] = {}
    ablations: dict[int, DistilledSet] = {}
    for k in sorted(set(sizes)):
        for name, learn in (("distilled", True), (ABLATION, False))[: 2 if ablation else 1]:
            done = distill_dataset(inputs, MDWConfig(pairs=k, learn_correspondence=learn), store, budget_s=budget_s,
                                   progress=progress, cancel=cancel)
            named.append((name, done))
            (by_size if learn else ablations)[k] = done
    results = compare_options(inputs, test, table, named, store, config=config, progress=progress, cancel=cancel)
    return PruneOrDistil(results=results, distilled=by_size, inputs=inputs, ablations=ablations, config=config)
