"""Train the proxy on a chosen subset and measure it on held-out data.

This is the experiment every pruning paper reports in a table: keep a fraction of the training
set, train the same network, compare test accuracy.  *How long* each subset trains decides what
the comparison means, so it is explicit (:data:`BUDGETS`, :func:`run_schedule`):

* ``equal_steps`` - every run takes as many optimiser steps as training on all the data; a smaller
  subset is seen for more epochs.  Accuracy then differs only by *which* samples were kept: the
  fair comparison of data quality (Sorscher et al. 2022; Paul et al. 2021 train subsets this way).
* ``equal_epochs`` - every run takes the same epochs, so its cost falls with the ratio: the
  compute-saving view (what a user saves by training on less).

In both, a subset's batch shrinks until an epoch has at least ``MIN_STEPS_PER_EPOCH`` steps, so no
run is step-starved (a 30 % subset at batch 512 would otherwise get one step an epoch).  The proxy
is the one that records training dynamics (:mod:`pruning_core.dynamics.trainer`), so a comparison
made here transfers to the scores computed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from pruning_core.dynamics.device_data import take_rows
from pruning_core.dynamics.trainer import ProxyTrainer, proxy_trainer
from pruning_core.runtime.planner import planned_batch_size
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report

BUDGETS = {
    "equal_steps": "every subset takes the optimiser steps of full-data training: compares data quality",
    "equal_epochs": "every subset takes the epochs of full-data training: its cost falls with the ratio",
}


@dataclass(frozen=True)
class RunSchedule:
    """How long one run trains: its batch, the steps of one epoch and the steps of the whole run."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int

    @property
    def epochs(self) -> float:
        """Epochs over the run's samples (fractional: an equal-steps run may end part-way through one)."""
        return self.total_steps / self.steps_per_epoch


def run_schedule(n_per_epoch: int, *, n_full: int, epochs: int, batch_size: int, budget: str) -> RunSchedule:
    """The schedule of a run visiting ``n_per_epoch`` samples an epoch, against full-data training on ``n_full``.

    Full-data training takes ``epochs`` epochs at ``planned_batch_size(batch_size, n_full)``; see the
    module docstring for what each budget gives a subset.
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
    if n_per_epoch < 1 or n_full < n_per_epoch or epochs < 1:
        raise ValueError(f"a schedule needs 1 <= n_per_epoch <= n_full and epochs >= 1; got {n_per_epoch}, "
                         f"{n_full}, {epochs}")
    batch = min(planned_batch_size(batch_size, n_per_epoch), n_per_epoch)
    steps_per_epoch = n_per_epoch // batch
    if budget == "equal_epochs":
        return RunSchedule(batch, steps_per_epoch, epochs * steps_per_epoch)
    full_batch = min(planned_batch_size(batch_size, n_full), n_full)
    return RunSchedule(batch, steps_per_epoch, epochs * (n_full // full_batch))


def train_for_schedule(
    t: ProxyTrainer,
    schedule: RunSchedule,
    epoch_samples: Callable[[], Optional[torch.Tensor]] = lambda: None,
    *,
    label: str = "",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **epoch_options: Any,
) -> int:
    """Train epochs until ``schedule.total_steps`` optimiser steps are done; returns the epochs begun.

    ``epoch_samples()`` gives the indices one epoch visits (None = all); the last epoch visits a random
    part of them, just enough for the steps that are left.  ``epoch_options`` go to ``train_epoch``.
    """
    epochs = 0
    while t.steps_done < schedule.total_steps:
        check(cancel)
        idx = epoch_samples()
        count = t.n if idx is None else int(idx.shape[0])
        left = schedule.total_steps - t.steps_done
        if count // t.batch_size > left:
            part = torch.randperm(count, device=t.dev, generator=t.gen)[: left * t.batch_size]
            idx = part if idx is None else idx[part]
        t.train_epoch(idx, cancel=cancel, **epoch_options)
        epochs += 1
        report(progress, "train", t.steps_done, schedule.total_steps,
               f"{label}epoch {epochs} (step {t.steps_done}/{schedule.total_steps})")
    return epochs


@dataclass
class TrainingRun:
    """What one training run on (a subset of) the data achieved.

    Attributes:
        accuracy: top-1 accuracy on the held-out set (NaN without one).
        n_train: samples the run was allowed per epoch (the kept subset's size).
        samples_trained: samples actually passed through the network over all epochs;
            the fair measure of training cost when subsets change per epoch.
        train_seconds: wall time of the training steps (data transfer excluded).
        heldout_probs: (M, C) softmax on the held-out set, or None.
        meta: trainer settings and extra, mode-specific facts.
    """

    accuracy: float
    n_train: int
    samples_trained: int
    train_seconds: float
    heldout_probs: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_trainer(cls, t: ProxyTrainer, n_train: int, test_x: Any, test_y: Any, **meta: Any) -> "TrainingRun":
        """Score the trainer's final model on the held-out set and record what the run cost."""
        probs = t.predict_probs(test_x) if test_x is not None else None
        return cls(accuracy=accuracy(probs, test_y), n_train=n_train, samples_trained=t.samples_trained,
                   train_seconds=t.train_seconds, heldout_probs=probs, meta={**t.meta(), **meta})


def accuracy(probs: Optional[np.ndarray], labels: Optional[Any]) -> float:
    """Top-1 accuracy of predicted probabilities; NaN when there is nothing to compare."""
    if probs is None or labels is None or len(probs) == 0:
        return float("nan")
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))


def train_on_subset(
    x: Any,
    y: Any,
    keep: np.ndarray,
    *,
    test_x: Any = None,
    test_y: Any = None,
    epochs: int,
    batch_size: int,
    budget: str,
    seed: int,
    device: str | torch.device = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **options: Any,
) -> TrainingRun:
    """Train on ``x[keep], y[keep]`` and score the final model on ``(test_x, test_y)``.

    Args:
        keep: boolean mask or integer indices of the samples to train on.
        epochs, batch_size: those of full-data training; ``budget`` says what the subset gets
            (:func:`run_schedule`).
        num_classes (in ``options``): pass the full dataset's class count, a subset may miss classes.
        **options: trainer options (arch, width, lr, ...), see
            :func:`pruning_core.dynamics.trainer.proxy_trainer`.
    """
    keep = np.asarray(keep)
    idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
    if idx.size == 0:
        raise ValueError("the subset is empty: keep at least one sample per class you want to learn")
    y_np = np.asarray(y).astype(np.int64, copy=False)
    schedule = run_schedule(int(idx.size), n_full=int(y_np.shape[0]), epochs=epochs, batch_size=batch_size,
                            budget=budget)
    with proxy_trainer(take_rows(x, idx), y_np[idx], epochs=epochs, total_steps=schedule.total_steps, seed=seed,
                       device=device, batch_size=schedule.batch_size, **options) as t:
        done = train_for_schedule(t, schedule, label=f"{idx.size:,} samples, ", progress=progress, cancel=cancel)
        return TrainingRun.from_trainer(t, int(idx.size), test_x, test_y, epochs=done, seed=seed, budget=budget,
                                        steps=t.steps_done)
