"""Train a proxy network once and record, every epoch, how it sees every training sample.

Training-dynamics scores (confidence, AUM, forgetting, EL2N, Dyn-Unc; research.md section 1) are
all functions of per-epoch, per-sample statistics of the given label.  :func:`train_and_record`
produces exactly those statistics in one run:

* every epoch's statistics but the last's are read from the logits its training steps computed anyway, as AUM
  (Pleiss et al.) and forgetting events (Toneva et al.) define them (the fewer than a batch of
  samples an epoch's dropped last batch leaves out are evaluated alone).  Only after the last
  epoch is the whole set evaluated again, in eval mode on the non-augmented view: that row and
  the final logits (the noise score, the final loss, the suggested labels) are the trained model's
  plain verdict.  An evaluation pass after every epoch cost a sixth of a budgeted run on 2 cores
  (3.3 of 20.8 s an epoch at 24 px on 50,000 images; docs/benchmarks.md, "Statistics from the
  training pass");

* the whole dataset is moved to the device **once** (images stay uint8 and unpadded, so 50k
  CIFAR images take 150 MB); every batch is gathered, randomly cropped and flipped on the device
  by one vectorised index operation, then normalised - no DataLoader, no worker processes.  When
  the data does not fit the device with headroom (:class:`~pruning_core.runtime.devices.DevicePolicy`) it
  stays in host memory and each batch is gathered there, pinned and copied over;
* images use the channels_last memory layout (tensor cores on CUDA, oneDNN on CPU); the model runs
  at the device policy's precision: bf16 autocast on CUDA cc >= 8 and bf16 CPUs, fp16 autocast
  with a GradScaler on older GPUs, fp32 elsewhere; cuDNN autotunes;
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
reproducibility (turns autotuning off and requests deterministic algorithms; see
:func:`pruning_core.runtime.devices.determinism`, which restores the caller's flags exactly).

The loop itself lives in :class:`ProxyTrainer` so that subset evaluation, dynamic pruning and
AdaPruner (``pruning_core.subset_training``) train exactly the way the scores were recorded.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.runtime.devices import (SMALL_OP_CPU_THREADS, ThreadPolicy, autocast, cpu_threads_for, decide,
                                          determinism, read_facts, resolve_device)
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report

from .device_data import DeviceData
from .models import PROBE_HIDDEN, build_model, folded_for_eval, training_working_bytes

# Per-arch defaults, tuned for short schedules (<= ~30 epochs).
_DEFAULT_LR = {"resnet9": 0.4, "mlp": 2e-3, "linear": 5e-3}
_DEFAULT_WD = {"resnet9": 5e-4, "mlp": 1e-4, "linear": 1e-4}
_REF_BATCH = 512  # resnet9 lr is given for this batch size and scaled linearly with it


@dataclass
class TrainingRecord:
    """Per-epoch statistics of the given label for every recorded training sample.

    Arrays are indexed ``[epoch, sample]``; sample ``j`` is training sample ``record_idx[j]``
    (all samples, in order, unless ``record_idx`` was passed to the trainer).  Every row but the last
    comes from the epoch's training pass (augmented view, train mode; the few samples its dropped last
    batch left out from the model at the epoch's end); the last, like ``final_logits``, from the
    trained model in eval mode on the plain view.

    Attributes:
        prob: (E, N) float32, softmax probability of the given label.
        margin: (E, N) float32, given-label logit minus the largest other logit (AUM's margin).
        correct: (E, N) bool, ``margin > 0`` (argmax equals the given label; ties count as wrong).
        loss: (E, N) float32, cross-entropy of the given label (no label smoothing).
        el2n: (E, N) float32, ``||softmax(z) - onehot(y)||_2``.
        final_logits: (N, C) float32, logits after the last epoch (copied to the host once, after it).
        labels: (N,) int64, the given labels of the recorded samples.
        record_idx: (N,) int64, indices into the training set.
        heldout_probs: (M, C) float32 softmax of the final model on ``eval_x``, or None.
        meta: arch, epochs, seed, device, timings (``train_seconds`` excludes data transfer
            and the final evaluation; ``record_seconds`` is that evaluation).
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


# --------------------------------------------------------------------------- training loop

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, labels, sample_idx) -> scalar``: a custom batch loss (logits are float32)."""


@contextlib.contextmanager
def _seeded(seed: int, dev: torch.device, deterministic: bool) -> Iterator[None]:
    """Seed torch's global RNG (initialisation, dropout) for one run; restore it and the determinism flags exactly."""
    with determinism(dev, deterministic), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _memory_needs(x: Any, arch: str, batch_size: int, width: int, hidden: int, num_classes: int,
                  precision: str) -> tuple[int, int]:
    """(bytes of the training data on the device, bytes of one training step's working set)."""
    x = x if hasattr(x, "shape") else np.asarray(x)
    shape = tuple(x.shape)
    itemsize = 1 if x.dtype in (np.uint8, torch.uint8) else 4
    data_bytes = int(np.prod(shape)) * itemsize
    size = shape[1] if len(shape) == 4 and itemsize == 1 else shape[-1]
    working = training_working_bytes(arch, batch_size=batch_size, width=width, image_size=int(size),
                                     in_dim=int(shape[-1]), num_classes=num_classes, hidden=hidden, precision=precision)
    return data_bytes, working


def _zero_nonfinite_grads(optimizer: torch.optim.Optimizer) -> None:
    """Zero every gradient of ``optimizer`` when any is inf/NaN (an overflowed fp16 step), without a host sync."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
    for g in grads:
        g.copy_(torch.where(finite, g, torch.zeros_like(g)))


def synchronize(dev: torch.device) -> None:
    """Wait for the device's queued work, so that timings measure it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def eval_chunk(dev: torch.device, batch_size: int) -> int:
    """Samples per evaluation forward pass of a proxy trained at ``batch_size``.

    On a CPU the training batch: a larger chunk's activations fall out of the caches (50,000 images at
    24 px on 2 cores: chunks of 1,024 took 1.6x as long as chunks of 256; docs/benchmarks.md, "The
    recording run's evaluation").  On an accelerator larger chunks keep it busy.
    """
    return batch_size if dev.type == "cpu" else max(1024, 2 * batch_size)


class ProxyTrainer:
    """One proxy network, its optimiser and one-cycle schedule over data already on the device.

    The single training loop every mode shares.  Callers decide *which* samples an epoch visits
    (all of them; a static subset; a new subset each epoch for dynamic pruning) and optionally
    *what* the batch loss is (AdaPruner's mask-weighted loss); the trainer owns batching,
    augmentation, mixed precision and the learning-rate schedule.  Build it with
    :func:`proxy_trainer`, which seeds the run.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        *,
        dev: torch.device,
        seed: int,
        arch: str,
        epochs: int,
        batch_size: int,
        width: int,
        precision: str,
        samples_per_epoch: Optional[int] = None,
        total_steps: Optional[int] = None,
        lr: Optional[float] = None,
        weight_decay: Optional[float] = None,
        label_smoothing: float = 0.0,
        warmup_frac: float = 0.25,
        num_classes: Optional[int] = None,
        hidden: int = PROBE_HIDDEN,
        crop_pad: Optional[int] = None,
        flip: bool = True,
    ) -> None:
        if arch not in _DEFAULT_LR:
            raise ValueError(f"unknown arch {arch!r}")
        if epochs < 1:
            raise ValueError("epochs must be >= 1")
        t0 = time.perf_counter()
        self.y_np = np.asarray(y).astype(np.int64, copy=False)
        n = int(self.y_np.shape[0])
        self.num_classes = int(self.y_np.max()) + 1 if num_classes is None else int(num_classes)
        if n == 0:
            raise ValueError("cannot train on zero samples")
        if self.y_np.min() < 0 or self.y_np.max() >= self.num_classes:
            raise ValueError("labels must be in [0, num_classes)")
        self.dev, self.n, self.arch, self.width = dev, n, arch, width
        # on a CPU, threads for the cores free now, re-checked every epoch (never above the caller's count,
        # which :func:`proxy_trainer` restores when the block ends)
        self.threads = ThreadPolicy() if dev.type == "cpu" else None
        self.policy = decide(read_facts(dev), precision)
        self.precision = self.policy.precision
        self.batch_size = max(1, min(int(batch_size), n))
        data_bytes, working = _memory_needs(x, arch, self.batch_size, width, hidden, self.num_classes, self.precision)
        self.data = DeviceData(x, dev, crop_pad=crop_pad, flip=flip,
                               on_device=self.policy.data_on_device(data_bytes, working))
        if self.data.n != n:
            raise ValueError(f"x has {self.data.n} samples but y has {n}")
        if (self.data.kind == "image") != (arch == "resnet9"):
            raise ValueError(f"arch {arch!r} does not fit {self.data.kind} inputs")
        self.y = torch.tensor(self.y_np, device=dev)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(seed)

        model = build_model(arch, self.num_classes, in_dim=self.data.in_dim, width=width, hidden=hidden).to(dev)
        if self.data.kind == "image":
            model = model.to(memory_format=torch.channels_last)
        self.model = model

        self.label_smoothing = label_smoothing
        self.total_steps = int(total_steps) if total_steps else self.steps_for(samples_per_epoch or n) * epochs
        self.lr = lr if lr is not None else _DEFAULT_LR[arch] * (self.batch_size / _REF_BATCH if arch == "resnet9" else 1.0)
        self.weight_decay = weight_decay if weight_decay is not None else _DEFAULT_WD[arch]
        if arch == "resnet9":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        else:
            self.opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # fp16 needs loss scaling (its gradients underflow); a disabled scaler is a plain pass-through
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.policy.grad_scaler)
        self.warmup_frac = warmup_frac
        self.steps_done = 0
        self.sched = self._one_cycle()
        self.samples_trained = 0
        self.train_seconds = 0.0
        synchronize(dev)
        self.data_seconds = time.perf_counter() - t0

    def _one_cycle(self) -> torch.optim.lr_scheduler.OneCycleLR:
        """The one-cycle schedule over :attr:`total_steps`, at the step :attr:`steps_done` has reached."""
        return torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=self.lr, total_steps=self.total_steps,
            pct_start=min(max(self.warmup_frac, 2 / self.total_steps), 0.99),  # >= 1 warm-up step
            anneal_strategy="linear", cycle_momentum=False, div_factor=10.0, final_div_factor=100.0,
            last_epoch=self.steps_done - 1,
        )

    def resize_schedule(self, total_steps: int) -> None:
        """Stretch the schedule to ``total_steps`` in mid-run, from the step reached: a budgeted run whose first
        epoch showed room for more epochs grows into them.  Done during warm-up (the first quarter), the
        learning rate only ramps up more slowly; the peak and the annealing keep their shape."""
        self.total_steps = int(total_steps)
        self.sched = self._one_cycle()

    def steps_for(self, n_samples: int) -> int:
        """Optimiser steps of an epoch over ``n_samples`` (the last incomplete batch is dropped:
        BatchNorm dislikes tiny batches)."""
        return max(1, int(n_samples) // self.batch_size)

    def train_epoch(
        self,
        idx: Optional[torch.Tensor] = None,
        *,
        loss_fn: Optional[LossFn] = None,
        extra_optimizer: Optional[torch.optim.Optimizer] = None,
        on_batch: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None,
        cancel: Optional[CancelToken] = None,
    ) -> None:
        """One pass over samples ``idx`` (default all), shuffled; ``extra_optimizer`` steps with the model's.

        ``on_batch(sample_idx, logits)`` sees every batch's float32 training-pass logits (detached): the
        recording run reads its per-epoch statistics from them.

        With fp16's GradScaler the model's step goes through the scaler, ``extra_optimizer``'s does not:
        its parameters' gradients are those of the *scaled* loss, so its update must be scale-free
        (AdaPruner normalises its mask gradient to unit RMS; ``scaler.unscale_`` would divide that
        already-normalised gradient by the scale, 65,536, and freeze the mask).  Where the scaled
        backward overflowed, the scaler skips the model's step and the extra step is zeroed too.
        """
        t1 = time.perf_counter()
        if self.threads is not None:
            self.threads.apply()
        self.model.train()
        order = torch.randperm(self.n if idx is None else int(idx.shape[0]), device=self.dev, generator=self.gen)
        perm = order if idx is None else idx[order]
        count = int(perm.shape[0])
        bs = min(self.batch_size, count)
        for s in range(count // bs if bs else 0):
            b = perm[s * bs : (s + 1) * bs]
            with autocast(self.dev, self.precision):
                out = self.model(self.data.augmented(b, self.gen))
            out = out.float()
            if on_batch is not None:
                on_batch(b, out.detach())
            if loss_fn is None:
                loss = F.cross_entropy(out, self.y[b], label_smoothing=self.label_smoothing)
            else:
                loss = loss_fn(out, self.y[b], b)
            self.opt.zero_grad(set_to_none=True)
            if extra_optimizer is not None:
                extra_optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            if extra_optimizer is not None:
                if self.scaler.is_enabled():
                    _zero_nonfinite_grads(extra_optimizer)
                extra_optimizer.step()
            if self.steps_done < self.total_steps:  # a caller's epochs may be a little longer than planned
                self.sched.step()
                self.steps_done += 1
            self.samples_trained += int(b.shape[0])
            check(cancel)
        synchronize(self.dev)
        self.train_seconds += time.perf_counter() - t1

    @torch.no_grad()
    def logits(self, idx: Optional[torch.Tensor] = None, *, data: Optional[DeviceData] = None
               ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Eval-mode float32 logits on the plain view, in chunks ``(positions, logits)``, from
        :func:`~pruning_core.dynamics.models.folded_for_eval`'s copy of the model."""
        model = folded_for_eval(self.model)
        data = data or self.data
        idx = torch.arange(data.n, device=self.dev) if idx is None else idx
        step = eval_chunk(self.dev, self.batch_size)
        for i in range(0, int(idx.shape[0]), step):
            with autocast(self.dev, self.precision):
                out = model(data.plain(idx[i : i + step]))
            yield slice(i, min(i + step, int(idx.shape[0]))), out.float()

    def predict_probs(self, x_other: Any) -> np.ndarray:
        """Softmax of the current model on other inputs (normalised with this training set's statistics)."""
        other = self.data.transform_other(x_other)
        parts = [torch.softmax(z, dim=1) for _, z in self.logits(data=other)]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros((0, self.num_classes), np.float32)

    def meta(self) -> dict:
        return {
            "arch": self.arch, "width": self.width, "precision": self.precision, "data_on_device": self.data.on_device,
            "device_policy": self.policy.as_dict(), "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "label_smoothing": self.label_smoothing, "device": str(self.dev), "num_classes": self.num_classes,
            "n_train": self.n, "data_seconds": self.data_seconds, "train_seconds": self.train_seconds,
            "samples_trained": self.samples_trained,
            "threads": None if self.threads is None else self.threads.choice.threads,
        }


@contextlib.contextmanager
def proxy_trainer(
    x: Any,
    y: Any,
    *,
    seed: int,
    device: str | torch.device = "auto",
    deterministic: bool = False,
    **options: Any,
) -> Iterator[ProxyTrainer]:
    """A seeded :class:`ProxyTrainer`; torch's global RNG is restored when the block ends.

    Args:
        x: uint8 images (N, H, W, 3) as decoded (numpy or tensor), float images (N, C, H, W)
            already normalised, or float embeddings (N, D) (standardised here per feature).
        y: (N,) int class indices in ``[0, num_classes)``.
        seed: seeds initialisation, shuffling, augmentation and dropout.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        deterministic: on CUDA, disable cuDNN autotuning and request deterministic kernels.
        **options: ``arch`` (``"resnet9"`` for images, ``"mlp"`` / ``"linear"`` for embeddings),
            ``epochs`` and ``samples_per_epoch`` (they size the one-cycle schedule; ``total_steps`` sizes
            it directly, for runs that stop mid-epoch), ``batch_size``
            (clipped to N), ``lr`` (peak; default 0.4 x batch/512 for resnet9 with Nesterov SGD,
            2e-3 mlp / 5e-3 linear with AdamW), ``weight_decay`` (5e-4 / 1e-4), ``label_smoothing``
            (training loss only), ``warmup_frac``, ``num_classes`` (default max(y) + 1; pass it when a
            subset may miss classes), ``width`` (ResNet-9 base width, 64 = original), ``hidden`` (MLP
            units), ``crop_pad`` (default round(H / 8)), ``flip``, ``precision`` (``"auto"``: the device
            policy's, see :func:`pruning_core.runtime.devices.decide`; or ``"bf16"``, ``"fp16"``, ``"fp32"``).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    small_ops = options["arch"] != "resnet9"  # a probe on embeddings: see SMALL_OP_CPU_THREADS
    with _seeded(seed, dev, deterministic), cpu_threads_for(SMALL_OP_CPU_THREADS if small_ops else None, dev):
        yield ProxyTrainer(x, y, dev=dev, seed=seed, **options)


def _evaluation_seconds(t: ProxyTrainer, rec_idx: torch.Tensor, chunks: int = 4) -> float:
    """Seconds the evaluation of ``rec_idx`` after the last epoch will take, from ``chunks`` timed chunks after two
    untimed ones (the first pays for folding the model and the kernels' set-up): a budgeted run keeps that time."""
    step = eval_chunk(t.dev, t.batch_size)
    sample = rec_idx[: step * (chunks + 2)]
    stamps = []
    for _ in t.logits(sample):
        synchronize(t.dev)
        stamps.append(time.perf_counter())
    timed = np.diff(stamps)[1:]
    if timed.size == 0:
        return 0.0
    return float(np.median(timed)) / step * int(rec_idx.shape[0])


def epochs_that_fit(available_s: float, first_epoch_s: float, planned: int, most: int) -> int:
    """Epochs a run may train when its first epoch took ``first_epoch_s`` of ``available_s``: as many as fit at that
    pace, between ``planned`` (never fewer: the deadline stops a slow run) and ``most``."""
    fit = int(available_s / max(first_epoch_s, 1e-9))
    return max(planned, min(most, fit))


def train_and_record(
    x: Any,
    y: Any,
    *,
    epochs: int,
    seed: int,
    device: str | torch.device = "auto",
    deterministic: bool = False,
    record_idx: Optional[Sequence[int] | np.ndarray] = None,
    eval_x: Any = None,
    deadline: Optional[float] = None,
    max_epochs: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **options: Any,
) -> TrainingRecord:
    """Train a proxy on ``(x, y)`` and record per-epoch given-label statistics.

    Args:
        x, y, seed, device, deterministic, **options: see :func:`proxy_trainer`.
        epochs: training epochs; one record per epoch.
        record_idx: which training samples to record (default all). An empty array records none (the
            cross-fitting folds, which need only ``heldout_probs``).
        eval_x: optional held-out inputs (same kind as ``x``); their final softmax is returned
            as ``heldout_probs``.
        deadline: a ``time.monotonic()`` instant (a time budget): training does not start an epoch
            that, at the mean epoch time so far and with the final evaluation (timed on a few chunks after
            the first epoch), would end after it (and stops after any epoch in which it passed), so a
            budgeted run ends about at its budget.  The
            record then holds the epochs done (``meta["stopped_by_budget"]`` is True); the
            schedule was sized for ``epochs``, so its learning rate had not yet annealed.
        max_epochs: with a ``deadline``, the most epochs the run may grow to: after the first epoch (a far
            longer measurement than the planner's probe, and a slow one: it pays the warm-up) the run trains
            as many epochs as fit the deadline at that epoch's pace, up to ``max_epochs``, and stretches its
            schedule to them (:meth:`ProxyTrainer.resize_schedule`).  It never shrinks: the deadline does that.
        progress, cancel: the project's progress callback / cancel token (checked every batch).
    """
    with proxy_trainer(x, y, epochs=epochs, seed=seed, device=device, deterministic=deterministic, **options) as t:
        rec_idx = np.arange(t.n, dtype=np.int64) if record_idx is None else np.asarray(record_idx, dtype=np.int64).reshape(-1)
        rec_dev = torch.as_tensor(rec_idx, device=t.dev)
        y_rec = t.y[rec_dev]
        n_rec = int(rec_idx.shape[0])
        # column n_rec takes the statistics of samples that are not recorded: every batch is written without a mask
        # (a boolean mask would synchronise with the host)
        column = torch.full((t.n,), n_rec, dtype=torch.long, device=t.dev)
        column[rec_dev] = torch.arange(n_rec, device=t.dev)
        seen = torch.zeros(n_rec + 1, dtype=torch.bool, device=t.dev)  # the current epoch's recorded samples
        stats = {k: torch.zeros((epochs, n_rec + 1), device=t.dev, dtype=torch.bool if k == "correct" else torch.float32)
                 for k in ("prob", "margin", "correct", "loss", "el2n")}
        epoch_logits = torch.empty((n_rec, t.num_classes), device=t.dev)  # the last epoch's, for one vectorised read
        t_record = 0.0
        done = 0
        epoch = -1

        def record_batch(b: torch.Tensor, logits: torch.Tensor) -> None:
            for k, v in label_stats(logits, t.y[b]).items():
                stats[k][epoch, column[b]] = v
            seen[column[b]] = True

        def record_the_left_out() -> None:
            """The few samples the epoch's dropped last batch left out (fewer than a batch): evaluated alone."""
            left = torch.nonzero(~seen[:n_rec]).flatten()
            for pos, logits in t.logits(rec_dev[left]):
                for k, v in label_stats(logits, y_rec[left[pos]]).items():
                    stats[k][epoch, left[pos]] = v
            seen.zero_()

        loop_started = time.monotonic()
        final_eval_s = 0.0  # the evaluation after the last epoch, measured after the first (budgeted runs only)
        measuring_s = 0.0  # what measuring it took: not an epoch's time
        while epoch + 1 < epochs:
            epoch += 1
            check(cancel)
            t.train_epoch(on_batch=record_batch if n_rec else None, cancel=cancel)
            if epoch == 0 and deadline is not None and n_rec:
                t1 = time.monotonic()
                final_eval_s = _evaluation_seconds(t, rec_dev)
                measuring_s = time.monotonic() - t1
            # the last epoch: the planned one, or the last one that ends (with the final evaluation) before the
            # budget runs out (the mean epoch so far says whether another one would end after the deadline)
            now = time.monotonic()
            mean_epoch = (now - loop_started - measuring_s) / (epoch + 1)
            last = epoch == epochs - 1 or (deadline is not None and now + mean_epoch + final_eval_s >= deadline)
            done = epoch + 1
            if done == 1 and deadline is not None and max_epochs is not None and not last:
                available = deadline - loop_started - measuring_s - final_eval_s
                grown = epochs_that_fit(available, mean_epoch, epochs, max_epochs)
                if grown > epochs:
                    t.resize_schedule(t.total_steps // epochs * grown)
                    stats = {k: torch.cat([v, v.new_zeros((grown - epochs, n_rec + 1))]) for k, v in stats.items()}
                    epochs = grown
            if last:  # the trained model's plain verdict: eval mode, non-augmented view
                t2 = time.perf_counter()
                for pos, logits in t.logits(rec_dev):
                    epoch_logits[pos] = logits
                for k, v in label_stats(epoch_logits, y_rec).items():
                    stats[k][epoch, :n_rec] = v
                synchronize(t.dev)
                t_record += time.perf_counter() - t2
            elif n_rec:
                record_the_left_out()
            report(progress, "train", done, epochs, f"{t.arch} epoch {done}/{epochs}")
            if last:
                break
        heldout = t.predict_probs(eval_x) if eval_x is not None else None
        out = {k: v[:done, :n_rec].cpu().numpy() for k, v in stats.items()}
        return TrainingRecord(
            prob=out["prob"], margin=out["margin"], correct=out["correct"], loss=out["loss"], el2n=out["el2n"],
            final_logits=epoch_logits.cpu().numpy(), labels=t.y_np[rec_idx].copy(), record_idx=rec_idx.copy(),
            heldout_probs=heldout,
            meta={**t.meta(), "epochs": epochs, "epochs_done": done, "stopped_by_budget": done < epochs, "seed": seed,
                  "record_seconds": t_record},
        )
