"""Train a proxy network once and record, after every epoch, how it sees every training sample.

Training-dynamics scores (confidence, AUM, forgetting, EL2N, Dyn-Unc; research.md section 1) are
all functions of per-epoch, per-sample statistics of the given label, measured in eval mode on the
non-augmented view.  :func:`train_and_record` produces exactly those statistics in one run:

* the whole dataset is moved to the device **once** (images stay uint8, reflect-padded, so 50k
  CIFAR images take 240 MB); every batch is gathered, randomly cropped and flipped on the device
  by one vectorised index operation, then normalised - no DataLoader, no worker processes;
* images use the channels_last memory layout (tensor cores on CUDA, oneDNN on CPU); on CUDA the
  model runs in bf16 autocast with cuDNN autotuning;
  the loop never synchronises with the host (no ``.item()``), statistics stay on the device
  until the end;
* the per-epoch statistics are computed vectorised from the logits (no loop over samples);
  EL2N needs the full softmax vector, so it is computed per epoch here and stored, instead of
  keeping (E, N, C) logits.

Determinism: all randomness (initialisation, shuffling, augmentation, dropout) comes from
``seed``.  On CPU two runs with the same seed and the same thread count are bitwise identical
(tested).  On CUDA results are reproducible only up to floating-point noise: cuDNN autotuning
picks algorithms by timing and several backward kernels use atomics, so the scores of two GPU
runs agree closely but not bitwise.  Pass ``deterministic=True`` to trade speed for bitwise GPU
reproducibility (turns autotuning off and requests deterministic algorithms).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.devices import autocast, resolve_device
from pruning_core.progress import CancelToken, ProgressCallback, check, report

from .models import build_model

# Per-arch defaults, tuned for short schedules (<= ~30 epochs).
_DEFAULT_LR = {"resnet9": 0.4, "mlp": 2e-3, "linear": 5e-3}
_DEFAULT_WD = {"resnet9": 5e-4, "mlp": 1e-4, "linear": 1e-4}
_REF_BATCH = 512  # resnet9 lr is given for this batch size and scaled linearly with it


@dataclass
class TrainingRecord:
    """Per-epoch statistics of the given label for every recorded training sample.

    Arrays are indexed ``[epoch, sample]``; sample ``j`` is training sample ``record_idx[j]``
    (all samples, in order, unless ``record_idx`` was passed to the trainer).

    Attributes:
        prob: (E, N) float32, softmax probability of the given label.
        margin: (E, N) float32, given-label logit minus the largest other logit (AUM's margin).
        correct: (E, N) bool, ``margin > 0`` (argmax equals the given label; ties count as wrong).
        loss: (E, N) float32, cross-entropy of the given label (no label smoothing).
        el2n: (E, N) float32, ``||softmax(z) - onehot(y)||_2``.
        final_logits: (N, C) float32, logits after the last epoch.
        labels: (N,) int64, the given labels of the recorded samples.
        record_idx: (N,) int64, indices into the training set.
        heldout_probs: (M, C) float32 softmax of the final model on ``eval_x``, or None.
        meta: arch, epochs, seed, device, timings (``train_seconds`` excludes data transfer
            and per-epoch recording; ``record_seconds`` is the recording).
    """

    prob: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    el2n: np.ndarray
    final_logits: np.ndarray
    labels: np.ndarray
    record_idx: np.ndarray
    heldout_probs: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    ARRAY_FIELDS = ("prob", "margin", "correct", "loss", "el2n", "final_logits", "labels", "record_idx")

    @property
    def n_epochs(self) -> int:
        return int(self.prob.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.prob.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.final_logits.shape[1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``ResultStore.save(arrays=...)``; ``meta`` goes to the entry's meta."""
        out = {name: getattr(self, name) for name in self.ARRAY_FIELDS}
        if self.heldout_probs is not None:
            out["heldout_probs"] = self.heldout_probs
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, meta: Optional[dict] = None) -> "TrainingRecord":
        """Inverse of :meth:`to_arrays`; ``arrays`` is a mapping or a cache ``Entry``."""
        get = arrays.array if hasattr(arrays, "array") else arrays.__getitem__
        names = arrays.names() if hasattr(arrays, "names") else list(arrays.keys())
        kw = {name: np.asarray(get(name)) for name in cls.ARRAY_FIELDS}
        held = np.asarray(get("heldout_probs")) if "heldout_probs" in names else None
        return cls(**kw, heldout_probs=held, meta=dict(meta or {}))


# --------------------------------------------------------------------------- data on device


class _DeviceData:
    """The dataset on the device plus the vectorised batch producers (augmented / plain)."""

    def __init__(self, x: Any, device: torch.device, crop_pad: Optional[int], flip: bool) -> None:
        with warnings.catch_warnings():
            # read-only arrays (memory maps, pandas) are never written through: padding copies them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.as_tensor(x)
        self.device = device
        # channels_last helps oneDNN on CPU as well as cuDNN tensor cores on CUDA
        self.channels_last = True
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
        if self.channels_last and xb.ndim == 4:
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

    def transform_other(self, x_other: Any) -> "_DeviceData":
        """``eval_x`` prepared with this data's normalisation (statistics of the training set)."""
        other = _DeviceData(x_other, self.device, crop_pad=getattr(self, "pad", None), flip=False)
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


# --------------------------------------------------------------------------- statistics


def label_stats(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Vectorised per-sample statistics of the given label ``y`` from logits (B, C).

    Returns prob, margin, correct, loss, el2n (each (B,)).
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=1)
    yi = y.long()[:, None]
    lp_y = logp.gather(1, yi)[:, 0]
    p = logp.exp()
    p_y = lp_y.exp()
    z_y = logits.gather(1, yi)[:, 0]
    max_other = logits.scatter(1, yi, float("-inf")).max(1).values
    margin = z_y - max_other
    # ||p - e_y||^2 = sum p^2 - 2 p_y + 1
    el2n = ((p * p).sum(1) - 2 * p_y + 1).clamp_min(0).sqrt()
    return {"prob": p_y, "margin": margin, "correct": margin > 0, "loss": -lp_y, "el2n": el2n}


# --------------------------------------------------------------------------- training


def train_and_record(
    x: Any,
    y: Any,
    *,
    arch: str = "resnet9",
    epochs: int = 16,
    batch_size: int = 512,
    lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    label_smoothing: float = 0.0,
    warmup_frac: float = 0.25,
    seed: int = 0,
    device: str | torch.device = "auto",
    num_classes: Optional[int] = None,
    width: int = 64,
    hidden: int = 512,
    crop_pad: Optional[int] = None,
    flip: bool = True,
    record_idx: Optional[Sequence[int] | np.ndarray] = None,
    eval_x: Any = None,
    eval_batch_size: Optional[int] = None,
    deterministic: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> TrainingRecord:
    """Train a proxy on ``(x, y)`` and record per-epoch given-label statistics.

    Args:
        x: uint8 images (N, H, W, 3) as decoded (numpy or tensor), float images (N, C, H, W)
            already normalised, or float embeddings (N, D) (standardised here per feature).
        y: (N,) int class indices in ``[0, num_classes)``.
        arch: ``"resnet9"`` for images, ``"mlp"`` / ``"linear"`` for embeddings.
        epochs: training epochs; one record per epoch.
        batch_size: training batch size (clipped to N).  The last incomplete batch of an epoch is
            dropped (BatchNorm dislikes tiny batches); the shuffle differs per epoch.
        lr: peak learning rate of the one-cycle schedule.  Default: 0.4 x batch_size/512 for
            resnet9 (SGD, Nesterov momentum 0.9), 2e-3 for mlp and 5e-3 for linear (AdamW).
        weight_decay: default 5e-4 (resnet9) / 1e-4 (probes).
        label_smoothing: optional label smoothing of the *training* loss (records are unsmoothed).
        warmup_frac: fraction of the steps spent warming the lr up linearly; then linear to ~0.
        seed: seeds initialisation, shuffling, augmentation and dropout (the global RNG is
            restored afterwards).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        num_classes: default ``max(y) + 1``; pass it when a subset may miss classes.
        width: ResNet-9 base width (64 = the original network).
        hidden: MLP probe hidden units.
        crop_pad: random-crop padding in pixels; default ``round(H / 8)`` (4 for 32 px).
        flip: random horizontal flips (images only).
        record_idx: which training samples to record (default all). An empty array records none,
            which saves the per-epoch evaluation when only ``heldout_probs`` are needed.
        eval_x: optional held-out inputs (same kind as ``x``); their final softmax is returned
            as ``heldout_probs``.
        deterministic: on CUDA, disable cuDNN autotuning and request deterministic kernels.
        progress, cancel: the project's progress callback / cancel token (checked every batch).

    Returns:
        A :class:`TrainingRecord`.
    """
    if arch not in _DEFAULT_LR:
        raise ValueError(f"unknown arch {arch!r}")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    y_np = np.asarray(y).astype(np.int64, copy=False)
    n = int(y_np.shape[0])
    if num_classes is None:
        num_classes = int(y_np.max()) + 1
    if y_np.min() < 0 or y_np.max() >= num_classes:
        raise ValueError("labels must be in [0, num_classes)")
    rec_idx = np.arange(n, dtype=np.int64) if record_idx is None else np.asarray(record_idx, dtype=np.int64).reshape(-1)

    cudnn_state = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    det_state = torch.are_deterministic_algorithms_enabled()
    fork_devices = [dev] if dev.type == "cuda" else []
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = deterministic
            if deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            return _train(
                x, y_np, n, num_classes, arch, epochs, batch_size, lr, weight_decay, label_smoothing,
                warmup_frac, seed, dev, width, hidden, crop_pad, flip, rec_idx, eval_x,
                eval_batch_size, progress, cancel,
            )
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_state
        if dev.type == "cuda" and deterministic:
            torch.use_deterministic_algorithms(det_state)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _train(
    x, y_np, n, num_classes, arch, epochs, batch_size, lr, weight_decay, label_smoothing, warmup_frac,
    seed, dev, width, hidden, crop_pad, flip, rec_idx, eval_x, eval_batch_size, progress, cancel,
) -> TrainingRecord:
    t0 = time.perf_counter()
    data = _DeviceData(x, dev, crop_pad=crop_pad, flip=flip)
    if data.n != n:
        raise ValueError(f"x has {data.n} samples but y has {n}")
    if (data.kind == "image") != (arch == "resnet9"):
        raise ValueError(f"arch {arch!r} does not fit {data.kind} inputs")
    y_dev = torch.tensor(y_np, device=dev)
    rec_dev = torch.as_tensor(rec_idx, device=dev)
    y_rec = y_dev[rec_dev]
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    model = build_model(arch, num_classes, in_dim=data.in_dim, width=width, hidden=hidden).to(dev)
    if data.channels_last and data.kind == "image":
        model = model.to(memory_format=torch.channels_last)

    bs = max(1, min(int(batch_size), n))
    steps_per_epoch = max(1, n // bs)
    total_steps = steps_per_epoch * epochs
    if arch == "resnet9":
        peak = lr if lr is not None else _DEFAULT_LR[arch] * bs / _REF_BATCH
        wd = weight_decay if weight_decay is not None else _DEFAULT_WD[arch]
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9, nesterov=True, weight_decay=wd)
    else:
        peak = lr if lr is not None else _DEFAULT_LR[arch]
        wd = weight_decay if weight_decay is not None else _DEFAULT_WD[arch]
        opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=peak, total_steps=total_steps, pct_start=min(max(warmup_frac, 1e-3), 0.99),
        anneal_strategy="linear", cycle_momentum=False, div_factor=10.0, final_div_factor=100.0,
    )

    n_rec = int(rec_idx.shape[0])
    stats = {k: torch.empty((epochs, n_rec), device=dev, dtype=torch.bool if k == "correct" else torch.float32)
             for k in ("prob", "margin", "correct", "loss", "el2n")}
    final_logits = torch.empty((n_rec, num_classes), device=dev, dtype=torch.float32)
    ebs = eval_batch_size or max(1024, 2 * bs)
    _sync(dev)
    t_data = time.perf_counter() - t0
    t_train = 0.0
    t_record = 0.0

    for epoch in range(epochs):
        check(cancel)
        t1 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=dev, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            xb = data.augmented(idx, gen)
            with autocast(dev):
                out = model(xb)
            loss = F.cross_entropy(out.float(), y_dev[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            check(cancel)
        _sync(dev)
        t2 = time.perf_counter()
        t_train += t2 - t1
        if n_rec:
            last = epoch == epochs - 1
            _evaluate(model, data, dev, rec_dev, y_rec, ebs, stats, epoch, final_logits if last else None)
            _sync(dev)
        t_record += time.perf_counter() - t2
        report(progress, "train", epoch + 1, epochs, f"{arch} epoch {epoch + 1}/{epochs}")

    heldout = None
    if eval_x is not None:
        other = data.transform_other(eval_x)
        heldout = _predict_probs(model, other, dev, ebs, num_classes)

    out = {k: v.cpu().numpy() for k, v in stats.items()}
    return TrainingRecord(
        prob=out["prob"], margin=out["margin"], correct=out["correct"], loss=out["loss"], el2n=out["el2n"],
        final_logits=final_logits.cpu().numpy(), labels=y_np[rec_idx].copy(), record_idx=rec_idx.copy(),
        heldout_probs=heldout,
        meta={
            "arch": arch, "epochs": epochs, "batch_size": bs, "lr": peak, "weight_decay": wd,
            "label_smoothing": label_smoothing, "seed": seed, "device": str(dev), "width": width,
            "num_classes": num_classes, "n_train": n, "data_seconds": t_data,
            "train_seconds": t_train, "record_seconds": t_record,
        },
    )


@torch.no_grad()
def _evaluate(model, data, dev, rec_dev, y_rec, ebs, stats, epoch, final_logits) -> None:
    model.eval()
    for i in range(0, rec_dev.shape[0], ebs):
        idx = rec_dev[i : i + ebs]
        with autocast(dev):
            logits = model(data.plain(idx))
        logits = logits.float()
        st = label_stats(logits, y_rec[i : i + ebs])
        for k, v in st.items():
            stats[k][epoch, i : i + ebs] = v
        if final_logits is not None:
            final_logits[i : i + ebs] = logits


@torch.no_grad()
def _predict_probs(model, data: _DeviceData, dev: torch.device, ebs: int, num_classes: int) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, data.n, ebs):
        idx = torch.arange(i, min(i + ebs, data.n), device=dev)
        with autocast(dev):
            logits = model(data.plain(idx))
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, num_classes), np.float32)
