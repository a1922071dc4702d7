"""Multimodal-guided dynamic pruning: a new training subset every epoch (research.md section 3).

Static pruning decides once, before training, from a proxy's opinion.  Dynamic pruning asks the
model being trained: each epoch it keeps the fraction ``ratio`` of samples with the highest
priority, where priority multiplies

* *difficulty* under the current model (the per-sample loss from the sample's last training
  step, so ranking costs no extra forward pass; samples never trained on rank hardest), and
* *consistency* of the sample with its label from a second modality, normally CLIP's
  image-label alignment (any score where low = suspicious works, e.g. cleanlab's label quality).

The product drops easy samples once they are learned (low difficulty) and likely-mislabelled
samples from the start (low consistency), while hard-but-consistent samples keep being trained on.
A small ``explore`` share of each epoch's budget is drawn at random from the rest, so losses of
dropped samples are refreshed and a sample dropped early can come back.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.dynamics.trainer import proxy_trainer
from pruning_core.runtime.progress import CancelToken, ProgressCallback
from pruning_core.selection import keep_count

from .runs import TrainingRun, run_schedule, train_for_schedule


def percentile_ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of each value in (0, 1], 1 = largest; ties share their average rank (vectorised)."""
    n = values.shape[0]
    sorted_values, order = torch.sort(values, stable=True)
    _, group, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    average = torch.cumsum(counts, 0).float() - (counts.float() - 1) / 2
    ranks = torch.empty(n, device=values.device, dtype=torch.float32)
    ranks[order] = average[group]
    return ranks / n


def epoch_subset(
    last_loss: torch.Tensor,
    consistency_rank: Optional[torch.Tensor],
    budget: int,
    explore: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Indices of the ``budget`` samples one epoch trains on (see the module docstring)."""
    n = last_loss.shape[0]
    unseen = torch.isinf(last_loss)
    jitter = torch.rand(n, device=last_loss.device, generator=gen)
    finite_max = torch.where(unseen, torch.zeros_like(last_loss), last_loss).max()
    difficulty = percentile_ranks(torch.where(unseen, finite_max + 1 + jitter, last_loss + 1e-7 * jitter))
    priority = difficulty if consistency_rank is None else difficulty * consistency_rank
    n_explore = min(int(round(explore * budget)), n - budget)
    top = torch.topk(priority, budget - n_explore).indices
    if n_explore == 0:
        return top
    rest = torch.ones(n, dtype=torch.bool, device=last_loss.device)
    rest[top] = False
    rest_idx = torch.nonzero(rest).squeeze(1)
    pick = rest_idx[torch.randperm(rest_idx.shape[0], device=last_loss.device, generator=gen)[:n_explore]]
    return torch.cat([top, pick])


def train_with_dynamic_pruning(
    x: Any,
    y: Any,
    ratio: float,
    *,
    consistency: Optional[np.ndarray] = None,
    explore: float = 0.1,
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
    """Train epochs that each visit the ``ratio`` fraction of samples with the highest priority.

    Args:
        ratio: fraction (or count) of the training set visited per epoch.
        epochs, batch_size, budget: as for :func:`~pruning_core.subset_training.runs.train_on_subset`;
            under ``equal_epochs`` the run costs ``ratio`` times full-data training.
        consistency: (N,) label-consistency score, high = the label fits the sample (e.g.
            ``clip.label_alignment``); NaN counts as average.  Without it, priority is difficulty alone.
        explore: share of each epoch's budget drawn at random from the samples not selected.
        **options: trainer options, see :func:`pruning_core.dynamics.trainer.proxy_trainer`.
    """
    y_np = np.asarray(y).astype(np.int64, copy=False)
    n = int(y_np.shape[0])
    budget_mode, per_epoch = budget, keep_count(ratio, n)
    if per_epoch == 0:
        raise ValueError("a dynamic-pruning ratio must keep at least one sample per epoch")
    if not 0.0 <= explore < 1.0:
        raise ValueError("explore must be in [0, 1)")
    schedule = run_schedule(per_epoch, n_full=n, epochs=epochs, batch_size=batch_size, budget=budget_mode)
    with proxy_trainer(x, y_np, epochs=epochs, total_steps=schedule.total_steps, batch_size=schedule.batch_size,
                       seed=seed, device=device, **options) as t:
        cons_rank = None
        if consistency is not None:
            c = torch.as_tensor(np.asarray(consistency, dtype=np.float32), device=t.dev)
            if c.shape[0] != n:
                raise ValueError(f"consistency has {c.shape[0]} values for {n} samples")
            cons_rank = percentile_ranks(torch.nan_to_num(c, nan=float(np.nanmedian(consistency))))
        last_loss = torch.full((n,), float("inf"), device=t.dev)
        visited = torch.zeros(n, dtype=torch.bool, device=t.dev)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(logits, labels, reduction="none")
            last_loss[idx] = ce.detach()
            visited[idx] = True
            return ce.mean()

        def epoch_samples() -> torch.Tensor:
            return epoch_subset(last_loss, cons_rank, per_epoch, explore, t.gen)

        done = train_for_schedule(t, schedule, epoch_samples, label=f"dynamic pruning, {per_epoch:,} samples, ",
                                  loss_fn=loss_fn, progress=progress, cancel=cancel)
        return TrainingRun.from_trainer(
            t, per_epoch, test_x, test_y, epochs=done, seed=seed, budget=budget_mode, steps=t.steps_done,
            mode="dynamic", explore=explore, visited_fraction=float(visited.float().mean()),
            with_consistency=consistency is not None,
        )
