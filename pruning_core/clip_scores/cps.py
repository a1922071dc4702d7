"""Selection optimisation of CLIP-powered data selection (research.md section 2, module 3).

A learnable logit ``d_i`` per sample, binarised ``m_i = 1[sigmoid(d_i) > 0.5]`` in the forward pass
with a straight-through estimator (the gradient flows as if ``m = sigmoid(d)``), trained by Adam on

    L = -mean(m * SAS) - alpha * mean(m * SDS) + gamma * P(m) / N + beta * (mean(m) - s)^2,   s = keep / N
    P(m) = sum over near-duplicate groups g of c_g (c_g - 1) / 2,   c_g = kept members of g.

Why the ``P`` term: the paper's two score terms are linear in ``m`` (each sample's SAS and SDS are
fixed numbers), so with them alone the minimiser under a count constraint is exactly the top-``keep``
by ``z_SAS + alpha * z_SDS`` and the optimiser adds nothing a sort does not.  SDS judges a sample by
its same-class neighbours among all samples, kept or not: every copy of a duplicated image is
"redundant", the last one kept included, and a top-k keeps all copies of a well-aligned image or none.  ``P`` counts the
near-duplicate pairs the selection itself keeps (groups from ``clip.duplicate_group``), so a copy
costs ``gamma`` per kept sibling and nothing once it is the only one left: the interaction between
samples (the paper's "group effect") that a per-sample score cannot express.  Its gradient for a
member of ``g`` is ``gamma * (c_g - m_i) / N``, so the optimiser drops the weaker copies first and
spends the freed places on distinct samples.  Our extension of the paper's loss (research.md gives
the linear form); ``gamma = 0`` or no groups gives the paper's form back.

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

from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

import numpy as np
import torch

from pruning_core.clip_scores._common import ArrayLike, device_of
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


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
    gamma: float = field(default=1.0, metadata={"label": "γ (near-duplicate pair cost)", "help": (
        "Cost of each pair of near-duplicates (clip.duplicate_group) the selection keeps: 0 is the paper's linear "
        "form, which ranks like a weighted sort and keeps every copy.")})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"CPS {f.name} must be a finite number >= 0, got {value}")


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
    duplicate_pairs: int
    """Near-duplicate pairs ``P`` the final mask keeps (0 without groups)."""


def _group_ids(groups: ArrayLike, n: int) -> np.ndarray:
    """``(n,)`` int64 group ids; NaN (a table read back with gaps) and negatives -> -1, "in none"."""
    g = np.asarray(groups, dtype=np.float64).ravel()
    if g.shape[0] != n:
        raise ValueError(f"groups has {g.shape[0]} rows, the scores {n}")
    return np.where(np.isfinite(g) & (g >= 0), g, -1).astype(np.int64)


def duplicate_pairs(mask: np.ndarray, groups: Optional[ArrayLike]) -> int:
    """``P``: pairs of kept samples that share a near-duplicate group (id -1 = in none)."""
    mask = np.asarray(mask, dtype=bool)
    if groups is None:
        return 0
    g = _group_ids(groups, mask.shape[0])[mask]
    counts = np.bincount(g[g >= 0]).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _group_index(groups: Optional[ArrayLike], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Members of groups with at least two members, and their group renumbered 0..G-1."""
    if groups is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    g = _group_ids(groups, n)
    size = np.bincount(g[g >= 0])
    members = np.flatnonzero((g >= 0) & (size[np.maximum(g, 0)] > 1)) if size.size else np.zeros(0, np.int64)
    _, renumbered = np.unique(g[members], return_inverse=True)
    return members, renumbered.astype(np.int64).ravel()


class _Adam:
    """``torch.optim.Adam``'s single-tensor update of one parameter, operation for operation (so a CPU run
    gives the same numbers), without ``torch.optim``: its first step imports ``torch._dynamo``, which made
    the Prune page's first CPS selection take 15-30 s where the optimisation itself takes well under one."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        grad, (beta1, beta2) = self.param.grad, self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1 ** float(self.steps))
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2 ** float(self.steps)) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


def cps_optimize(
    sas: ArrayLike,
    sds: ArrayLike,
    keep: int,
    *,
    groups: Optional[ArrayLike] = None,
    alpha: float = CPSConfig.alpha,
    gamma: float = CPSConfig.gamma,
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

    ``groups``: ``(N,)`` near-duplicate group id per sample, -1 for none (``clip.duplicate_group``);
    ``alpha``: weight of diversity relative to alignment (both standardised, see module docstring);
    ``gamma``: cost of each kept near-duplicate pair, in the same standardised units;
    ``beta``: weight of the kept-fraction penalty.  ``d`` starts at 0 (plus ``N(0, init_std)`` noise from
    ``seed`` when ``init_std > 0``); the whole run is a few hundred elementwise steps on ``device``
    (plus a gather and a scatter over the duplicate-group members), so it takes well under a second per
    million samples on a GPU and about 0.5 s for 50,000 on one CPU thread.
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
    members, member_group = _group_index(groups, n)
    history = np.zeros(0, dtype=np.float64)
    d_np = np.zeros(n, dtype=np.float32)
    kept = 0
    if n > 0 and 0 < keep < n and steps > 0:
        dev = device_of(device)
        s = keep / n
        a = torch.as_tensor(z_sas, dtype=torch.float32, device=dev)
        b = torch.as_tensor(z_sds, dtype=torch.float32, device=dev)
        d = torch.zeros(n, dtype=torch.float32, device=dev)
        paired = gamma != 0 and members.size > 0
        if paired:
            who = torch.as_tensor(members, device=dev)
            which = torch.as_tensor(member_group, device=dev)
            n_groups = int(member_group.max()) + 1
        if init_std > 0:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            d += init_std * torch.randn(n, generator=gen).to(dev)
        d.requires_grad_(True)
        opt = _Adam(d, lr=lr)
        hist = torch.zeros(steps, dtype=torch.float32, device=dev)
        every = max(1, steps // 20)
        for step in range(steps):
            if step % every == 0:
                check(cancel)
                report(progress, "CPS selection", step, steps)
            p = torch.sigmoid(d)
            m = (p > 0.5).to(p.dtype) + p - p.detach()  # straight-through: forward hard, backward soft
            loss = -(m * a).mean() - alpha * (m * b).mean() + beta * (m.mean() - s) ** 2
            if paired:
                mg = m[who]
                kept_in = torch.zeros(n_groups, dtype=m.dtype, device=dev).index_add(0, which, mg)
                loss = loss + gamma * 0.5 * (mg * (kept_in[which] - mg)).sum() / n
            d.grad = None
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
    return CPSResult(mask=mask, logits=d_np, combined=combined, loss_history=history, optimizer_kept=kept,
                     duplicate_pairs=duplicate_pairs(mask, groups))


def cps_select(sas: ArrayLike, sds: ArrayLike, keep: int, **options: Any) -> np.ndarray:
    """Boolean keep-mask ``(N,)`` with exactly ``keep`` True: high SAS and SDS, few near-duplicate pairs.

    The mask alone, for callers (``selection.select``) that take any mask-returning strategy;
    ``options`` are :func:`cps_optimize`'s keywords (``groups``, ``alpha``, ``gamma``, ``beta``, ``steps``, ``seed``,
    ``device``, ...), with its defaults.  ``keep`` 0 or N short-cuts the optimisation.
    """
    return cps_optimize(sas, sds, keep, **options).mask
