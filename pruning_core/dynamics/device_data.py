"""The training set held on the device, with vectorised batch producers.

Proxy training never uses a DataLoader: the whole dataset is moved to the device once (images stay
uint8 and reflect-padded, so 50k CIFAR images take 240 MB) and every batch is gathered, randomly
cropped and flipped by one index operation, then normalised.  That is what makes a 16-epoch
CIFAR run take seconds on a GPU instead of being bound by image decoding.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch


def take_rows(x: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of numpy or torch inputs (a torch tensor stays on its device)."""
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, device=x.device)]
    return np.asarray(x)[idx]


class DeviceData:
    """The dataset on the device plus the vectorised batch producers (augmented / plain)."""

    def __init__(self, x: Any, device: torch.device, crop_pad: Optional[int], flip: bool) -> None:
        with warnings.catch_warnings():
            # read-only arrays (memory maps, pandas) are never written through: padding copies them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.as_tensor(x)
        self.device = device
        if t.ndim == 4:
            self.kind = "image"
            if t.dtype == torch.uint8:  # (N, H, W, C) as decoded
                t = t.to(device, non_blocking=True).permute(0, 3, 1, 2)
                mean, std = _channel_stats(t)
            else:  # float (N, C, H, W), already normalised by the caller
                t = t.to(device, dtype=torch.float32)
                mean = torch.zeros(t.shape[1], device=device)
                std = torch.ones(t.shape[1], device=device)
            n, c, h, w = t.shape
            pad = max(1, round(h / 8)) if crop_pad is None else int(crop_pad)
            self.pad, self.h, self.w = pad, h, w
            # Reflect padding by indexing (works for uint8, which F.pad's reflect mode does not).
            self.x = t[:, :, _reflect_index(h, pad, device)][:, :, :, _reflect_index(w, pad, device)].contiguous()
            self.mean = mean.view(1, -1, 1, 1)
            self.std = std.view(1, -1, 1, 1)
            self.flip = flip
            self.in_dim = None
        elif t.ndim == 2:
            self.kind = "embedding"
            t = t.to(device, dtype=torch.float32)
            self.mean = t.mean(0, keepdim=True)
            self.std = t.std(0, keepdim=True).clamp_min(1e-6)
            self.x = t
            self.in_dim = int(t.shape[1])
        else:
            raise ValueError(f"x must be images (N,H,W,3) uint8 / (N,C,H,W) float or embeddings (N,D); got {tuple(t.shape)}")
        self.n = int(t.shape[0])

    def _finish(self, xb: torch.Tensor) -> torch.Tensor:
        xb = (xb.float() - self.mean) / self.std
        if xb.ndim == 4:  # channels_last helps oneDNN on CPU as well as cuDNN tensor cores on CUDA
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def plain(self, idx: torch.Tensor) -> torch.Tensor:
        """Non-augmented view of samples ``idx`` (the centre of the padded images)."""
        if self.kind == "embedding":
            return self._finish(self.x[idx])
        p = self.pad
        return self._finish(self.x[idx, :, p : p + self.h, p : p + self.w])

    def augmented(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random crop (from the reflect-padded image) + horizontal flip, as one gather."""
        if self.kind == "embedding":
            return self._finish(self.x[idx])
        b, dev, p = idx.shape[0], self.device, self.pad
        oy = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        ox = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        ar_h = torch.arange(self.h, device=dev)
        ar_w = torch.arange(self.w, device=dev)
        rows = oy + ar_h  # (B, H)
        if self.flip:
            flip = torch.rand((b, 1), device=dev, generator=gen) < 0.5
            cols = ox + torch.where(flip, ar_w.flip(0), ar_w)  # flipping = reading columns backwards
        else:
            cols = ox + ar_w
        ch = torch.arange(self.x.shape[1], device=dev)
        xb = self.x[idx[:, None, None, None], ch[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        return self._finish(xb)

    def transform_other(self, x_other: Any) -> "DeviceData":
        """``eval_x`` prepared with this data's normalisation (statistics of the training set)."""
        other = DeviceData(x_other, self.device, crop_pad=getattr(self, "pad", None), flip=False)
        if other.kind != self.kind:
            raise ValueError("eval_x must be of the same kind (images / embeddings) as x")
        other.mean, other.std = self.mean, self.std
        return other


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    if pad >= size:
        raise ValueError(f"crop padding {pad} must be smaller than the image size {size}")
    idx = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def _channel_stats(x_u8: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean / std of uint8 NCHW images, in chunks (no full float copy)."""
    c = x_u8.shape[1]
    s = torch.zeros(c, dtype=torch.float64, device=x_u8.device)
    s2 = torch.zeros_like(s)
    for i in range(0, x_u8.shape[0], chunk):
        xb = x_u8[i : i + chunk].to(torch.float64)
        s += xb.sum((0, 2, 3))
        s2 += (xb * xb).sum((0, 2, 3))
    count = x_u8.shape[0] * x_u8.shape[2] * x_u8.shape[3]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(1e-6).sqrt()
    return mean.float(), std.float()
