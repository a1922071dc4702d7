"""Out-of-sample predicted probabilities by stratified k-fold cross-fitting.

Confident learning (cleanlab) needs ``pred_probs`` that were *not* produced by a model that
trained on the sample: a network that memorised a wrong label would vouch for it.  Each fold's
model trains on the other folds and predicts only its held-out fold, so every sample is predicted
exactly once, by a model that never saw it (the fold assignment is public so this can be checked).

Cleaned cross-fitting.  A fold model trained on noisy labels learns the noise: on 10,000 CIFAR-10 images with
40 % of labels flipped it predicts the *given* label for many wrong samples, and the posterior over the true
class then both misses them and over-states the noise (docs/benchmarks.md, "Suggested labels…").  With
``trusted`` (the samples the recording run's noise score ranks cleanest within each given class,
:func:`cleanest_by_class`) each fold model trains only on the trusted samples of the other folds and still
predicts *every* sample of its own fold: the second round of iterative cleaning, out of sample.  It also
costs less than classic cross-fitting, as each fold trains on ``share`` of the samples.

The job is resumable per fold: with ``fold_cache`` each finished fold's probabilities are saved
atomically and skipped on the next run (cancel-safe: a cancelled run loses at most one fold).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from cache.store import atomic_save_npy, read_chunk
from pruning_core.runtime import executors
from pruning_core.runtime.planner import planned_batch_size
from pruning_core.runtime.progress import CancelToken, ProgressCallback, report

from .device_data import take_rows
from .trainer import train_and_record

FoldCache = Union[str, Path, Callable[[int], Path], None]


class BudgetSpent(RuntimeError):
    """The time budget ran out before every fold finished; the finished folds are kept for a rerun."""

    def __init__(self, folds_done: Optional[int] = None, folds: Optional[int] = None) -> None:
        done = "" if folds is None else f" after {folds_done} of {folds} cross-fitting folds"
        super().__init__(f"the time budget was spent{done}; rerun with the same settings to finish the rest "
                         "(finished folds are kept)")
        self.folds_done, self.folds = folds_done, folds


def fold_assignment(y: Any, folds: int, seed: int) -> np.ndarray:
    """(N,) int fold id of every sample: stratified by label, shuffled with ``seed``."""
    y_np = np.asarray(y).astype(np.int64, copy=False)
    if folds < 2:
        raise ValueError("cross-fitting needs folds >= 2")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assign = np.full(y_np.shape[0], -1, dtype=np.int64)
    for k, (_, test) in enumerate(skf.split(np.zeros(len(y_np)), y_np)):
        assign[test] = k
    return assign


def _fold_path(fold_cache: FoldCache, k: int) -> Optional[Path]:
    if fold_cache is None:
        return None
    if callable(fold_cache):
        return Path(fold_cache(k))
    return Path(fold_cache) / f"fold{k}.npy"


def cached_folds(fold_cache: FoldCache, folds: int) -> int:
    """How many of ``folds`` finished folds ``fold_cache`` holds: what a resumed run will not retrain."""
    return sum(path is not None and path.is_file() for path in (_fold_path(fold_cache, k) for k in range(folds)))


def out_of_sample_probs(
    x: Any,
    y: Any,
    *,
    folds: int,
    arch: str,
    epochs: int,
    seed: int,
    device: str | torch.device = "auto",
    num_classes: Optional[int] = None,
    fold_cache: FoldCache = None,
    trusted: Optional[np.ndarray] = None,
    deadline: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **train_kw: Any,
) -> np.ndarray:
    """(N, C) softmax probabilities, each row from the fold model that did not train on it.

    Args:
        x, y: as for :func:`~pruning_core.dynamics.trainer.train_and_record` (images or embeddings).
        folds: number of stratified folds (fold ids from :func:`fold_assignment`).
        arch, epochs, seed, device: passed to the trainer (fold k trains with ``seed + k``).
        num_classes: default ``max(y) + 1``; fixed for all folds so their columns line up.
        fold_cache: a directory (``fold{k}.npy`` inside, plus ``assignment.npy`` to detect a
            changed split) or a callable ``k -> path``; finished folds are loaded instead of
            retrained.  Use ``ResultStore.partial_dir(key)`` with a key over all parameters
            (``trusted`` included: the key must change when it does).
        trusted: (N,) bool, the samples fold models may train on (default: all); every sample of a fold is
            still predicted (cleaned cross-fitting, see the module docstring).
        deadline: a ``time.monotonic()`` instant (a time budget).  A fold cut short by it is not
            kept (it would not be the fold a rerun asks for) and :class:`BudgetSpent` is raised.
        progress: one ``"cross-fit"`` stage counting epochs over all folds.
        **train_kw: further trainer options (batch_size, lr, width, label_smoothing, ...).
    """
    y_np = np.asarray(y).astype(np.int64, copy=False)
    n = y_np.shape[0]
    c = int(y_np.max()) + 1 if num_classes is None else int(num_classes)
    assign = fold_assignment(y_np, folds, seed)
    trusted_np = np.ones(n, dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    if trusted_np.shape != (n,):
        raise ValueError(f"trusted must be (N,) bool with N={n}, got shape {trusted_np.shape}")

    if fold_cache is not None and not callable(fold_cache):
        apath = Path(fold_cache) / "assignment.npy"
        saved = read_chunk(apath) if apath.is_file() else assign
        if saved is None or not np.array_equal(saved, assign):
            for k in range(folds):  # a different (or unknown) split: the cached folds are not valid here
                Path(fold_cache, f"fold{k}.npy").unlink(missing_ok=True)
        atomic_save_npy(apath, assign)

    probs = np.full((n, c), np.nan, dtype=np.float32)
    total = folds * epochs
    todo = []
    for k in range(folds):
        path = _fold_path(fold_cache, k)
        cached = read_chunk(path) if path is not None else None  # a damaged fold is quarantined and retrained
        if cached is not None and cached.shape == (int(np.sum(assign == k)), c):
            probs[assign == k] = cached
            report(progress, "cross-fit", (k + 1) * epochs, total, f"fold {k + 1}/{folds} (cached)")
        else:
            todo.append(k)

    def fold_started(j: int) -> Optional[ProgressCallback]:
        k = todo[j]
        if progress is None:
            return None
        return lambda p: report(progress, "cross-fit", k * epochs + p.done, total,
                                f"fold {k + 1}/{folds}, epoch {p.done}/{p.total}")

    finished = folds - len(todo)

    def fold_done(j: int, fold_probs: np.ndarray) -> None:
        nonlocal finished
        k, finished = todo[j], finished + 1
        probs[assign == k] = fold_probs
        path = _fold_path(fold_cache, k)
        if path is not None:  # saved the moment the fold ends: a cancel or a crash keeps it
            atomic_save_npy(path, fold_probs)
        report(progress, "cross-fit", finished * epochs, total, f"fold {k + 1}/{folds} done ({finished}/{folds})")

    try:
        executors.current().map(
            train_fold, todo, common=dict(x=x, y=y_np, assign=assign, trusted=trusted_np, arch=arch, epochs=epochs,
                                          seed=seed, device=device, num_classes=c, deadline=deadline, train_kw=train_kw),
            needs=executors.Needs.for_device(str(device)), on_start=fold_started, on_done=fold_done, cancel=cancel,
        )
    except BudgetSpent:
        raise BudgetSpent(finished, folds) from None
    return probs


def train_fold(k: int, *, x: Any, y: np.ndarray, assign: np.ndarray, trusted: np.ndarray, arch: str, epochs: int,
               seed: int, device: str | torch.device, num_classes: int, train_kw: dict,
               deadline: Optional[float] = None, progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelToken] = None) -> np.ndarray:
    """Fold ``k``'s held-out probabilities (float32), from a model trained on the ``trusted`` samples of every
    other fold with ``seed + k``.

    Raises :class:`BudgetSpent` when ``deadline`` has passed before the fold starts or cuts its training.
    """
    if deadline is not None and time.monotonic() >= deadline:
        raise BudgetSpent()
    test = np.flatnonzero(assign == k)
    train = np.flatnonzero((assign != k) & trusted)
    if "batch_size" in train_kw:  # a fold, cleaned above all, trains on fewer samples than the plan's batch was for
        train_kw = {**train_kw, "batch_size": planned_batch_size(train_kw["batch_size"], len(train))}
    rec = train_and_record(
        take_rows(x, train), y[train], arch=arch, epochs=epochs, seed=seed + k, device=device,
        num_classes=num_classes, record_idx=np.zeros(0, dtype=np.int64), eval_x=take_rows(x, test),
        deadline=deadline, progress=progress, cancel=cancel, **train_kw,
    )
    if rec.meta.get("stopped_by_budget"):
        raise BudgetSpent()
    fold_probs = rec.heldout_probs
    assert fold_probs is not None and fold_probs.shape == (test.shape[0], num_classes)
    return fold_probs.astype(np.float32)


def cleanest_by_class(noise_score: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """(N,) bool: the ``share`` of each given class with the lowest ``noise_score`` (ties by index).

    Within each class rather than overall, so that the fold models see the classes in the proportions the
    labels give: a global cut would drop most of a class that receives many flips, and a model trained on
    shifted class priors would shift every posterior read from it.  ``share == 1`` trusts every sample.
    """
    score = np.asarray(noise_score, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64, copy=False)
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if share == 1:
        return np.ones(len(y), dtype=bool)
    trusted = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        keep = max(1, int(round(share * len(members))))
        trusted[members[np.argsort(score[members], kind="stable")[:keep]]] = True
    return trusted
