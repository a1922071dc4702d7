"""The training set held on the device, with vectorised batch producers.

Proxy training never uses a DataLoader: the whole dataset is moved to the device once (images stay
uint8 and unpadded, so 50k CIFAR images take 150 MB) and every batch is gathered, randomly
cropped from a reflect-padded view (the padding is index arithmetic inside the gather, never a
padded copy) and flipped by one index operation, then normalised.  That is what makes a 16-epoch
CIFAR run take seconds on a GPU instead of being bound by image decoding.

When the data does not fit the device's memory with headroom (``DevicePolicy.data_on_device``) it
stays in host memory and each batch's images are gathered there, pinned and copied over before the
same augmentation (pinning the whole set would lock as much RAM as the GPU lacked):
slower, but the same random numbers on the device give the same batches, so the same results.
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
    """The dataset (on the device, or in host memory) plus the vectorised batch producers (augmented / plain).

    Args:
        x: uint8 images (N, H, W, C), float images (N, C, H, W) already normalised, or embeddings (N, D).
        device: where batches are produced.
        crop_pad: random-crop padding (default round(H / 8)).
        flip: random horizontal flips.
        on_device: keep the data on ``device`` (False: host memory; each batch pinned and copied).
    """

    def __init__(self, x: Any, device: torch.device, crop_pad: Optional[int], flip: bool,
                 on_device: bool = True) -> None:
        with warnings.catch_warnings():
            # read-only arrays (memory maps, pandas) are never written through
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.as_tensor(x)
        self.device = device
        self.on_device = on_device
        home = device if on_device else torch.device("cpu")
        if t.ndim == 4:
            self.kind = "image"
            if t.dtype == torch.uint8:  # (N, H, W, C) as decoded
                t = t.to(home, non_blocking=True).permute(0, 3, 1, 2)
                mean, std = _channel_stats(t)
            else:  # float (N, C, H, W), already normalised by the caller
                t = t.to(home, dtype=torch.float32)
                mean = torch.zeros(t.shape[1])
                std = torch.ones(t.shape[1])
            n, c, h, w = t.shape
            pad = max(1, round(h / 8)) if crop_pad is None else int(crop_pad)
            if pad >= min(h, w):
                raise ValueError(f"crop padding {pad} must be smaller than the image size {min(h, w)}")
            self.pad, self.h, self.w = pad, h, w
            # on the host the caller's array stays as it is (a memory map stays one): batches are gathered from it
            self.x = t.contiguous() if on_device else t
            self.mean = mean.to(device).view(1, -1, 1, 1)
            self.std = std.to(device).view(1, -1, 1, 1)
            self.flip = flip
            self.in_dim = None
        elif t.ndim == 2:
            self.kind = "embedding"
            t = t.to(home, dtype=torch.float32)
            self.mean = t.mean(0, keepdim=True).to(device)
            self.std = t.std(0, keepdim=True).clamp_min(1e-6).to(device)
            self.x = t
            self.in_dim = int(t.shape[1])
        else:
            raise ValueError(f"x must be images (N,H,W,3) uint8 / (N,C,H,W) float or embeddings (N,D); got {tuple(t.shape)}")
        self.n = int(t.shape[0])

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size()

    def _rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(source, positions)``: where samples ``idx`` are read from on the device, and at which rows."""
        if self.on_device:
            return self.x, idx
        rows = self.x[idx.cpu()]  # gathered on the host, one copy per batch
        if self.device.type == "cuda":
            rows = rows.pin_memory()  # page-locked, so the copy to the GPU is asynchronous
        return rows.to(self.device, non_blocking=True), torch.arange(rows.shape[0], device=self.device)

    def _finish(self, xb: torch.Tensor) -> torch.Tensor:
        xb = (xb.float() - self.mean) / self.std
        if xb.ndim == 4:  # channels_last helps oneDNN on CPU as well as cuDNN tensor cores on CUDA
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def plain(self, idx: torch.Tensor) -> torch.Tensor:
        """Non-augmented view of samples ``idx``."""
        source, pos = self._rows(idx)
        return self._finish(source[pos])

    def augmented(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random crop from the reflect-padded image + horizontal flip, as one gather from the unpadded images."""
        if self.kind == "embedding":
            return self.plain(idx)
        b, dev, p = idx.shape[0], self.device, self.pad
        oy = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        ox = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        ar_h = torch.arange(self.h, device=dev)
        ar_w = torch.arange(self.w, device=dev)
        rows = _reflect(oy - p + ar_h, self.h)  # (B, H): padded row oy + i is unpadded row reflect(oy + i - p)
        if self.flip:
            flip = torch.rand((b, 1), device=dev, generator=gen) < 0.5
            cols = ox - p + torch.where(flip, ar_w.flip(0), ar_w)  # flipping = reading columns backwards
        else:
            cols = ox - p + ar_w
        cols = _reflect(cols, self.w)
        source, pos = self._rows(idx)
        ch = torch.arange(source.shape[1], device=dev)
        xb = source[pos[:, None, None, None], ch[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        return self._finish(xb)

    def transform_other(self, x_other: Any) -> "DeviceData":
        """``eval_x`` prepared with this data's normalisation (statistics of the training set)."""
        other = DeviceData(x_other, self.device, crop_pad=getattr(self, "pad", None), flip=False,
                           on_device=self.on_device)
        if other.kind != self.kind:
            raise ValueError("eval_x must be of the same kind (images / embeddings) as x")
        other.mean, other.std = self.mean, self.std
        return other


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-padding as index arithmetic: -1 -> 1, size -> size - 2 (works for uint8, which F.pad's reflect mode does not)."""
    idx = idx.abs()
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def _channel_stats(x_u8: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean / std of uint8 NCHW images, in chunks (no full float copy).

    Each chunk is summed in float32 on the images' device (MPS has no float64) and the sums are
    accumulated in float64 on the host, where 1.28 M images' sums of squares stay exact enough.
    """
    c = x_u8.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for i in range(0, x_u8.shape[0], chunk):
        xb = x_u8[i : i + chunk].to(torch.float32)
        s += xb.sum((0, 2, 3)).cpu().double()
        s2 += (xb * xb).sum((0, 2, 3)).cpu().double()
    count = x_u8.shape[0] * x_u8.shape[2] * x_u8.shape[3]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(1e-6).sqrt()
    return mean.float(), std.float()
