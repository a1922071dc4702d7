"""AdaPruner: a per-sample keep mask learned jointly with the model (Yang et al. 2023; research.md section 4).

Every sample ``i`` gets a logit ``m_i`` and a weight ``w_i = sigmoid(s * m_i)``; the temperature
``s`` rises during training (0.1 -> 5 in the reference code) so the soft weights harden into a
mask.  After a warm start on the full data, model and mask are trained on

    mean_i(CE_i w_i) + mean_i(-log(CE_i.detach() + eps) w_i) + lambda (mean(w) - r)^2

The first term trains the model on the weighted data and pushes weight off samples the model
cannot fit (often mislabelled); the second pushes weight off samples that are already easy; the
third holds the kept fraction at the target ``r``.  ``lambda`` is integral-controlled: it grows
while the kept fraction is off target by more than ``tolerance`` and shrinks back otherwise,
watching the soft fraction early and the hard one (``m_i > 0``) as the temperature rises, which
makes the final mask land within a percent of ``r`` without a hand-tuned penalty (tested for
ratios 0.2-0.8).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.dynamics.trainer import proxy_trainer
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


class AdaPruner:
    """Learn which ``ratio`` of the training set to keep (scikit-learn style: ``fit``, then attributes).

    Args:
        ratio: target kept fraction in (0, 1).
        warmup_epochs: full-data epochs before the mask is learned (the warm start).
        mask_epochs: epochs of joint model + mask training.
        temperature: (start, end) of the geometric temperature schedule.
        mask_lr: how far the mask logits can move over the mask phase, in multiples of the
            distance from their start (``w = ratio``) to a decisive value.  The optimiser is SGD
            on the RMS-normalised gradient, not Adam: the *relative size* of each sample's
            gradient is the signal, and Adam's per-parameter normalisation would erase it.
        penalty: initial ``lambda``; ``penalty_growth`` is its relative increase per step and
            per unit of relative fraction gap.
        seed, device, **options: as for :func:`pruning_core.dynamics.trainer.proxy_trainer`.

    Attributes (after ``fit``):
        mask_logits_: (N,) learned ``m_i``; higher = keep.  The Prune page's ``adapruner``
            strategy keeps the top-k of these, so any count can be honoured exactly.
        mask_: (N,) bool, ``m_i > 0`` (the method's own mask).
        kept_fraction_: ``mask_.mean()``.
        history_: per mask epoch, the hard kept fraction and ``lambda``.
    """

    def __init__(
        self,
        ratio: float,
        *,
        warmup_epochs: int,
        mask_epochs: int,
        temperature: tuple[float, float] = (0.1, 5.0),
        mask_lr: float = 30.0,
        penalty: float = 1.0,
        penalty_growth: float = 3.0,
        tolerance: float = 0.005,
        max_penalty: float = 1e4,
        eps: float = 1e-4,
        seed: int,
        device: str | torch.device = "auto",
        **options: Any,
    ) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"AdaPruner ratio must be a fraction in (0, 1); got {ratio!r}")
        if warmup_epochs < 0 or mask_epochs < 1:
            raise ValueError("AdaPruner needs warmup_epochs >= 0 and mask_epochs >= 1")
        self.ratio = float(ratio)
        self.warmup_epochs = warmup_epochs
        self.mask_epochs = mask_epochs
        self.temperature = temperature
        self.mask_lr = mask_lr
        self.penalty = penalty
        self.penalty_growth = penalty_growth
        self.tolerance = tolerance
        self.max_penalty = max_penalty
        self.eps = eps
        self.seed = seed
        self.device = device
        self.options = options

    def fit(
        self,
        x: Any,
        y: Any,
        *,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> "AdaPruner":
        y_np = np.asarray(y).astype(np.int64, copy=False)
        n = int(y_np.shape[0])
        epochs = self.warmup_epochs + self.mask_epochs
        with proxy_trainer(x, y_np, epochs=epochs, seed=self.seed, device=self.device, **self.options) as t:
            for epoch in range(self.warmup_epochs):
                check(cancel)
                t.train_epoch(cancel=cancel)
                report(progress, "AdaPruner", epoch + 1, epochs, f"warm start epoch {epoch + 1}/{self.warmup_epochs}")
            # start every weight at w = r, so the penalty starts satisfied and only the data terms move the mask
            start = float(np.log(self.ratio / (1 - self.ratio))) / self.temperature[0]
            logits = torch.full((n,), start, device=t.dev, requires_grad=True)
            total_steps = self.mask_epochs * t.steps_for(n)
            # Normalised SGD: the whole gradient vector is rescaled to unit RMS each step, so the step
            # size is scale-free while each sample's share of it (the signal) is kept.
            logits.register_hook(lambda g: g / g.pow(2).mean().sqrt().clamp_min(1e-12))
            travel = abs(start) + 1 / self.temperature[0]  # from w = ratio to a decisive logit
            mask_opt = torch.optim.SGD([logits], lr=self.mask_lr * travel / total_steps)
            state = _MaskState(self, total_steps=total_steps, device=t.dev)
            history = []
            for epoch in range(self.mask_epochs):
                check(cancel)
                t.train_epoch(loss_fn=lambda z, lab, idx: state.loss(z, lab, idx, logits), extra_optimizer=mask_opt,
                              cancel=cancel)
                kept = float((logits > 0).float().mean())
                history.append({"epoch": epoch + 1, "kept_fraction": kept, "penalty": float(state.lam)})
                report(progress, "AdaPruner", self.warmup_epochs + epoch + 1, epochs,
                       f"mask epoch {epoch + 1}/{self.mask_epochs}: keeping {kept:.1%} (target {self.ratio:.0%})")
            self.mask_logits_ = logits.detach().cpu().numpy().astype(np.float32)
            self.train_meta_ = {**t.meta(), "epochs": epochs, "seed": self.seed}
        self.mask_ = self.mask_logits_ > 0
        self.kept_fraction_ = float(self.mask_.mean())
        self.history_ = history
        return self


class _MaskState:
    """The annealed temperature and adaptive penalty of one fit; updated per step on the device."""

    def __init__(self, pruner: AdaPruner, total_steps: int, device: torch.device) -> None:
        self.pruner = pruner
        self.total_steps = max(1, total_steps)
        self.step = 0
        self.lam = torch.tensor(float(pruner.penalty), device=device)

    def loss(self, z: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        p = self.pruner
        s_start, s_end = p.temperature
        progress = min(1.0, self.step / self.total_steps)
        s = s_start * (s_end / s_start) ** progress
        self.step += 1
        ce = F.cross_entropy(z, labels, reduction="none")
        w_batch = torch.sigmoid(s * logits[idx])
        w_all = torch.sigmoid(s * logits)
        easy = -torch.log(ce.detach() + p.eps)
        loss = (ce * w_batch).mean() + (easy * w_batch).mean() + self.lam * (w_all.mean() - p.ratio) ** 2
        with torch.no_grad():  # integral control of lambda, on the device (no host sync)
            # the soft fraction is what the penalty sees; the hard one (m > 0) is what the mask keeps
            # and only means something once the temperature is high: shift control from one to the other
            fraction = (1 - progress) * w_all.mean() + progress * (logits > 0).float().mean()
            gap = (fraction - p.ratio).abs() / p.ratio
            self.lam = (self.lam * torch.exp(p.penalty_growth * (gap - p.tolerance))).clamp(p.penalty, p.max_penalty)
        return loss
