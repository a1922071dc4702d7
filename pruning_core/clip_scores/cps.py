"""Selection optimisation of CLIP-powered data selection (research.md section 2, module 3).

A learnable logit ``d_i`` per sample, binarised ``m_i = 1[sigmoid(d_i) > 0.5]`` in the forward pass
with a straight-through estimator (the gradient flows as if ``m = sigmoid(d)``), trained by Adam on

    L = -mean(m * SAS) - alpha * mean(m * SDS) + beta * (mean(m) - s)^2,      s = keep / N.

Normalisation: SAS (cosines, a narrow band such as 0.2..0.35) and SDS (mean cosine distances, another
narrow band) live on unrelated scales, so each is standardised over the dataset first,
``z = (x - mean) / std`` (std 0 -> all zeros; NaN -> 0, i.e. treated as average).  ``alpha`` then
weighs diversity against alignment in units of each score's own spread, independent of the model.

The penalty keeps the kept fraction near ``s`` but not exactly on it; the mask is finished by
ranking: the ``keep`` samples with the largest ``d`` are kept (the same order as sigmoid(d), without
its float saturation at 1.0), ties broken by the combined standardised score ``z_SAS + alpha * z_SDS``
and then by the lower index, so the result is deterministic and has exactly ``keep`` True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch

from pruning_core.clip_scores._common import ArrayLike, device_of
from pruning_core.progress import CancelToken, ProgressCallback, check, report


def standardize(x: ArrayLike) -> np.ndarray:
    """``(x - mean) / std`` over finite values as float64; NaN -> 0; constant input -> zeros."""
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    out = np.zeros_like(x)
    if finite.sum() == 0:
        return out
    mu = x[finite].mean()
    sd = x[finite].std()
    if sd > 0:
        out[finite] = (x[finite] - mu) / sd
    return out


@dataclass(frozen=True)
class CPSConfig:
    """The user-facing settings of the CPS loss.

    Defaults live here only: the CLI's flags and the Prune page read them, the page also each field's
    ``metadata`` label and help.
    """

    alpha: float = field(default=1.0, metadata={"label": "α (diversity weight)", "help": (
        "Weight of diversity (SDS) against label alignment (SAS), both standardised: 0 keeps by alignment alone.")})
    beta: float = field(default=100.0, metadata={"label": "β (size penalty)", "help": (
        "Weight of the kept-fraction penalty: larger holds the optimiser's mask nearer the requested size "
        "(the exact count is enforced afterwards by ranking either way).")})

    def __post_init__(self) -> None:
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"CPS alpha must be a finite number >= 0, got {self.alpha}")
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"CPS beta must be a finite number >= 0, got {self.beta}")


@dataclass(frozen=True)
class CPSResult:
    mask: np.ndarray
    """``(N,)`` bool, exactly ``keep`` True."""
    logits: np.ndarray
    """``(N,)`` float32 learned ``d``."""
    combined: np.ndarray
    """``(N,)`` float64 ``z_SAS + alpha * z_SDS``, the tie-breaker."""
    loss_history: np.ndarray
    """``(steps,)`` loss per step."""
    optimizer_kept: int
    """How many samples the binarised mask kept before the exact-count finish."""


def cps_optimize(
    sas: ArrayLike,
    sds: ArrayLike,
    keep: int,
    *,
    alpha: float = CPSConfig.alpha,
    beta: float = CPSConfig.beta,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    init_std: float = 0.0,
    device: Union[str, torch.device] = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> CPSResult:
    """Run the optimisation and return the exact-count mask with its diagnostics.

    ``alpha``: weight of diversity relative to alignment (both standardised, see module docstring);
    ``beta``: weight of the kept-fraction penalty.  ``d`` starts at 0 (plus ``N(0, init_std)`` noise from ``seed`` when ``init_std > 0``); the whole
    run is a few hundred elementwise steps on ``device``, so it takes well under a second per
    million samples on a GPU.
    """
    z_sas = standardize(sas)
    z_sds = standardize(sds)
    n = z_sas.shape[0]
    if z_sds.shape[0] != n:
        raise ValueError(f"sas and sds differ in length: {n} vs {z_sds.shape[0]}")
    keep = int(keep)
    if not 0 <= keep <= n:
        raise ValueError(f"keep must be in [0, {n}], got {keep}")
    combined = z_sas + alpha * z_sds
    history = np.zeros(0, dtype=np.float64)
    d_np = np.zeros(n, dtype=np.float32)
    kept = 0
    if n > 0 and 0 < keep < n and steps > 0:
        dev = device_of(device)
        s = keep / n
        a = torch.as_tensor(z_sas, dtype=torch.float32, device=dev)
        b = torch.as_tensor(z_sds, dtype=torch.float32, device=dev)
        d = torch.zeros(n, dtype=torch.float32, device=dev)
        if init_std > 0:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            d += init_std * torch.randn(n, generator=gen).to(dev)
        d.requires_grad_(True)
        opt = torch.optim.Adam([d], lr=lr)
        hist = torch.zeros(steps, dtype=torch.float32, device=dev)
        every = max(1, steps // 20)
        for step in range(steps):
            if step % every == 0:
                check(cancel)
                report(progress, "CPS selection", step, steps)
            p = torch.sigmoid(d)
            m = (p > 0.5).to(p.dtype) + p - p.detach()  # straight-through: forward hard, backward soft
            loss = -(m * a).mean() - alpha * (m * b).mean() + beta * (m.mean() - s) ** 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist[step] = loss.detach()
        d_np = d.detach().cpu().numpy()
        history = hist.cpu().numpy().astype(np.float64)
        kept = int((d_np > 0).sum())
        report(progress, "CPS selection", steps, steps)
    mask = np.zeros(n, dtype=bool)
    if keep > 0:
        # lexsort: last key is primary -> sort by -d, then -combined, then index (ascending).
        order = np.lexsort((np.arange(n), -combined, -d_np.astype(np.float64)))
        mask[order[:keep]] = True
    return CPSResult(mask=mask, logits=d_np, combined=combined, loss_history=history, optimizer_kept=kept)


def cps_select(sas: ArrayLike, sds: ArrayLike, keep: int, **options: Any) -> np.ndarray:
    """Boolean keep-mask ``(N,)`` with exactly ``keep`` True, preferring high SAS and high SDS.

    The mask alone, for callers (``selection.select``) that take any mask-returning strategy;
    ``options`` are :func:`cps_optimize`'s keywords (``alpha``, ``beta``, ``steps``, ``seed``,
    ``device``, ...), with its defaults.  ``keep`` 0 or N short-cuts the optimisation.
    """
    return cps_optimize(sas, sds, keep, **options).mask
