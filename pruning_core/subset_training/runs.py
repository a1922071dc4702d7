"""Train the proxy on a chosen subset and measure it on held-out data.

This is the experiment every pruning paper reports in a table: keep a fraction of the training
set, train the same network for the same number of epochs, compare test accuracy.  The proxy is
the one that records training dynamics (:mod:`pruning_core.dynamics.trainer`), so a comparison
made here transfers to the scores computed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from pruning_core.dynamics.device_data import take_rows
from pruning_core.dynamics.trainer import ProxyTrainer, proxy_trainer
from pruning_core.progress import CancelToken, ProgressCallback, check, report


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
    epochs: int = 16,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **options: Any,
) -> TrainingRun:
    """Train on ``x[keep], y[keep]`` for ``epochs`` and score the final model on ``(test_x, test_y)``.

    Args:
        keep: boolean mask or integer indices of the samples to train on.
        num_classes (in ``options``): pass the full dataset's class count, a subset may miss classes.
        **options: trainer options (arch, width, batch_size, lr, ...), see
            :func:`pruning_core.dynamics.trainer.proxy_trainer`.
    """
    keep = np.asarray(keep)
    idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
    if idx.size == 0:
        raise ValueError("the subset is empty: keep at least one sample per class you want to learn")
    y_np = np.asarray(y).astype(np.int64, copy=False)
    with proxy_trainer(take_rows(x, idx), y_np[idx], epochs=epochs, seed=seed, device=device, **options) as t:
        for epoch in range(epochs):
            check(cancel)
            t.train_epoch(cancel=cancel)
            report(progress, "train", epoch + 1, epochs, f"epoch {epoch + 1}/{epochs} on {idx.size:,} samples")
        return TrainingRun.from_trainer(t, int(idx.size), test_x, test_y, epochs=epochs, seed=seed)
