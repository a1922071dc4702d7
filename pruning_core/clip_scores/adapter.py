"""Dataset adaptation for CLIP-powered selection: light residual adapters on frozen CLIP features.

``A(x) = normalize((1 - r) * x + r * f(x))`` with ``f`` linear (initialised to the identity) or a
small MLP (last layer initialised to zero), and a learnable blend ``r = sigmoid(rho)``.  Either way
the adapter starts as exactly the identity, so a short fit nudges the frozen CLIP space towards the
dataset rather than replacing it.  The image adapter A_I and text adapter A_T are trained jointly with
InfoNCE: each image against all C class prompt embeddings (its given class is the positive, every
other class a negative), plus optionally the symmetric image<->caption InfoNCE inside a batch.

The labels may be noisy, so the defaults are deliberately small and short (linear, 5 epochs): the
adapter should learn the dataset's domain shift, not memorise the mislabelled samples.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from pruning_core.clip_scores._common import ArrayLike, as_label_ids, device_of, normalize, to_tensor
from pruning_core.runtime.devices import SMALL_OP_CPU_THREADS, cpu_threads_for
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


FIT_CPU_THREADS = SMALL_OP_CPU_THREADS
"""torch CPU threads while an adapter fits: a step works on 256 x 512 tensors, see
:data:`pruning_core.runtime.devices.SMALL_OP_CPU_THREADS`.  On the shared 2-core VM, 5 epochs on 50,000 x 512
took 103-132 s on 2 threads (load 3-4) and 6-9 s on one (load 1-2.6); on the idle machine 2 threads
saved at most ~15% (docs/benchmarks.md)."""


class _ResidualAdapter(nn.Module):
    def __init__(self, dim: int, hidden: int, ratio: float, learn_ratio: bool) -> None:
        super().__init__()
        if hidden > 0:
            self.f = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            nn.init.zeros_(self.f[2].weight)
            nn.init.zeros_(self.f[2].bias)
        else:
            self.f = nn.Linear(dim, dim)
            with torch.no_grad():
                self.f.weight.copy_(torch.eye(dim))
                self.f.bias.zero_()
        rho = torch.tensor(math.log(ratio / (1.0 - ratio)), dtype=torch.float32)
        if learn_ratio:
            self.rho = nn.Parameter(rho)
        else:
            self.register_buffer("rho", rho)

    @property
    def ratio(self) -> torch.Tensor:
        return torch.sigmoid(self.rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ratio
        return normalize((1.0 - r) * x + r * self.f(x))


class ClipAdapter:
    """Residual image/text adapters fitted with InfoNCE on frozen, normalised CLIP embeddings.

    ``hidden=0``: linear adapters (D x D, identity init); ``hidden>0``: D -> hidden -> D MLPs.
    ``ratio``: initial residual blend r in (0, 1); learnable unless ``learn_ratio=False``.
    ``temperature``: logit scale of the InfoNCE (CLIP's is 100).
    """

    def __init__(
        self,
        hidden: int = 0,
        ratio: float = 0.2,
        learn_ratio: bool = True,
        temperature: float = 100.0,
        device: Union[str, torch.device] = "auto",
    ) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError("ratio must be in (0, 1)")
        self.hidden = int(hidden)
        self.ratio = float(ratio)
        self.learn_ratio = bool(learn_ratio)
        self.temperature = float(temperature)
        self.device = device
        self.dim_: Optional[int] = None
        self.image_adapter_: Optional[_ResidualAdapter] = None
        self.text_adapter_: Optional[_ResidualAdapter] = None
        self.loss_history_: list[float] = []

    # -- training ---------------------------------------------------------------------------------
    def _build(self, dim: int, dev: torch.device) -> None:
        self.dim_ = dim
        self.image_adapter_ = _ResidualAdapter(dim, self.hidden, self.ratio, self.learn_ratio).to(dev)
        self.text_adapter_ = _ResidualAdapter(dim, self.hidden, self.ratio, self.learn_ratio).to(dev)

    def fit(
        self,
        img_emb: ArrayLike,
        label_ids: ArrayLike,
        class_text_emb: ArrayLike,
        *,
        captions_emb: Optional[ArrayLike] = None,
        caption_weight: float = 0.5,
        epochs: int = 5,
        lr: float = 1e-3,
        batch_size: int = 256,
        weight_decay: float = 0.0,
        trim: float = 0.1,
        seed: int = 0,
        cpu_threads: Optional[int] = FIT_CPU_THREADS,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> "ClipAdapter":
        """Train both adapters; ``loss_history_`` holds the mean minibatch loss of each epoch.

        ``captions_emb`` (N, D), when given, adds ``caption_weight`` x the symmetric in-batch
        image<->caption InfoNCE, both sides through their adapters.  Deterministic for a seed on a
        given device.  Weight decay defaults to 0: decaying the identity-initialised linear map
        towards zero would fight the residual design.  ``trim`` drops that fraction of the
        highest-loss pairs from each batch (the small-loss trick): the user's labels and captions
        are noisy, and fitting the mismatched pairs would hide exactly what the scores must find.
        ``cpu_threads``: torch threads while fitting on the CPU (see ``FIT_CPU_THREADS``; None keeps
        torch's setting).
        """
        dev = device_of(self.device)
        with cpu_threads_for(cpu_threads, dev):
            torch.manual_seed(seed)
            x = normalize(to_tensor(img_emb, dev))
            n, dim = x.shape
            y = torch.as_tensor(as_label_ids(label_ids, n), device=dev)
            t = normalize(to_tensor(class_text_emb, dev))
            if t.shape[1] != dim:
                raise ValueError(f"class_text_emb has dim {t.shape[1]}, images {dim}")
            if n and (int(y.min()) < 0 or int(y.max()) >= t.shape[0]):
                raise ValueError("label_ids out of range of class_text_emb")
            cap = None
            if captions_emb is not None:
                cap = normalize(to_tensor(captions_emb, dev))
                if tuple(cap.shape) != (n, dim):
                    raise ValueError("captions_emb must have the shape of img_emb")
            self._build(dim, dev)
            params = list(self.image_adapter_.parameters()) + list(self.text_adapter_.parameters())
            # fused: one kernel per step for all parameters instead of ~6 elementwise ops per tensor.
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            ce = nn.functional.cross_entropy
            self.loss_history_ = []
            self.image_adapter_.train()
            self.text_adapter_.train()
            for epoch in range(epochs):
                perm = torch.randperm(n, generator=gen).to(dev)
                total = torch.zeros((), device=dev)  # summed on the device: no host sync per batch
                for s in range(0, n, batch_size):
                    check(cancel)
                    bi = perm[s : s + batch_size]
                    zi = self.image_adapter_(x[bi])
                    zt = self.text_adapter_(t)
                    loss = _small_loss_mean(ce(self.temperature * zi @ zt.T, y[bi], reduction="none"), trim)
                    if cap is not None and caption_weight > 0 and len(bi) > 1:
                        zc = self.text_adapter_(cap[bi])
                        logits = self.temperature * zi @ zc.T
                        target = torch.arange(len(bi), device=dev)
                        pair = 0.5 * (ce(logits, target, reduction="none") + ce(logits.T, target, reduction="none"))
                        loss = loss + caption_weight * _small_loss_mean(pair, trim)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(bi)
                self.loss_history_.append(float(total) / max(n, 1))
                report(progress, "CLIP adapter", epoch + 1, epochs, f"loss {self.loss_history_[-1]:.4f}")
            if epochs == 0:
                report(progress, "CLIP adapter", 0, 0)
            self.image_adapter_.eval()
            self.text_adapter_.eval()
            return self

    # -- inference --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.image_adapter_ is None or self.text_adapter_ is None:
            raise RuntimeError("ClipAdapter is not fitted; call fit() or from_state_dict() first")

    def _apply(self, module: nn.Module, x: ArrayLike, block: int = 65_536) -> np.ndarray:
        self._check_fitted()
        dev = next(module.parameters()).device
        n = int(x.shape[0])
        out = np.empty((n, self.dim_), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, n, block):
                out[s : s + block] = module(normalize(to_tensor(x[s : s + block], dev))).cpu().numpy()
        return out

    def transform_images(self, x: ArrayLike) -> np.ndarray:
        """Adapted, re-normalised image embeddings ``(N, D)`` float32."""
        return self._apply(self.image_adapter_, x)

    def transform_text(self, t: ArrayLike) -> np.ndarray:
        """Adapted, re-normalised text embeddings (class prompts or captions) ``(M, D)`` float32."""
        return self._apply(self.text_adapter_, t)

    @property
    def ratios_(self) -> tuple[float, float]:
        """Current residual blend (image, text)."""
        self._check_fitted()
        return float(self.image_adapter_.ratio.detach()), float(self.text_adapter_.ratio.detach())

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` dict (config as 0-d arrays) that ``ResultStore.save(arrays=...)`` takes."""
        self._check_fitted()
        out: dict[str, np.ndarray] = {
            "config.dim": np.asarray(self.dim_, dtype=np.int64),
            "config.hidden": np.asarray(self.hidden, dtype=np.int64),
            "config.ratio": np.asarray(self.ratio, dtype=np.float64),
            "config.learn_ratio": np.asarray(self.learn_ratio, dtype=np.bool_),
            "config.temperature": np.asarray(self.temperature, dtype=np.float64),
            "loss_history": np.asarray(self.loss_history_, dtype=np.float64),
        }
        for prefix, module in (("image", self.image_adapter_), ("text", self.text_adapter_)):
            for name, value in module.state_dict().items():
                out[f"{prefix}.{name}"] = value.detach().cpu().numpy().copy()
        return out

    @classmethod
    def from_state_dict(
        cls, state: dict[str, np.ndarray], device: Union[str, torch.device] = "auto"
    ) -> "ClipAdapter":
        """Rebuild a fitted adapter from :meth:`state_dict` output (e.g. arrays read from the cache)."""
        self = cls(
            hidden=int(state["config.hidden"]),
            ratio=float(state["config.ratio"]),
            learn_ratio=bool(state["config.learn_ratio"]),
            temperature=float(state["config.temperature"]),
            device=device,
        )
        dev = device_of(device)
        self._build(int(state["config.dim"]), dev)
        for prefix, module in (("image", self.image_adapter_), ("text", self.text_adapter_)):
            sd = {k[len(prefix) + 1 :]: torch.as_tensor(np.asarray(v)) for k, v in state.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sd)
            module.eval()
        self.loss_history_ = [float(v) for v in np.asarray(state.get("loss_history", []))]
        return self


def _small_loss_mean(losses: torch.Tensor, trim: float) -> torch.Tensor:
    """Mean of the ``1 - trim`` smallest per-pair losses: likely-noisy pairs do not train the adapter."""
    keep = max(1, int(round(losses.shape[0] * (1.0 - trim))))
    return torch.topk(losses, keep, largest=False).values.mean()
