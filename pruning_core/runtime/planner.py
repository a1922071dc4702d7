"""Plan a training-based step so it finishes in the time the user gave it, on the machine at hand.

The proxy's full-size settings (ResNet-9 width 64 at 32 px, 16 epochs, 4 cross-fitting folds: the
defaults of :class:`~pruning_core.dynamics.config.DynamicsConfig`) take seconds on a GPU and tens of
minutes on a 2-core CPU.  Rather than one set of defaults that is wrong on one of them, the default
is a *time budget*: a short throughput probe on the real device measures how many images per second
each candidate setting trains and evaluates (a few batches, cached per device and setting), and
:func:`plan_dynamics` picks the most capable rung of :data:`RUNGS` whose estimated time fits.  Any
setting the user gives explicitly is kept as given; the planner only fills in the rest.  The plan
(settings, estimate, measured rates, the device policy's decisions and the memory the run needs) is
shown before the run starts and recorded with its results.

Cost model of one dynamics step over N samples with E epochs and k folds (k >= 2): the recording run
trains E·N samples and evaluates all N after every epoch; cross-fitting trains k models on (k-1)/k
of the data, i.e. E·N·(k-1) more training samples, and evaluates each held-out fold once.  So
``train = E·N·max(k, 1)`` and ``eval = E·N + N`` sample-passes, each divided by its measured rate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import torch

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.runtime.devices import DevicePolicy, device_policy, resolve_device, resolve_precision
from pruning_core.runtime.progress import ProgressCallback, report

DEFAULT_BUDGET_S = 60.0
"""What the CLI and the Score page give a training-based step unless told otherwise: on a 2-core CPU the
demo's whole dynamics step (cross-fitting included) fits; on a GPU the full-size settings fit."""

PLANNED_FIELDS = ("image_size", "width", "epochs", "folds", "batch_size")
"""The DynamicsConfig fields a plan chooses (unless the user fixed them)."""

RUNGS: tuple[Mapping[str, int], ...] = (
    {"image_size": 16, "width": 16, "epochs": 6, "folds": 0, "batch_size": 256},
    {"image_size": 16, "width": 16, "epochs": 8, "folds": 0, "batch_size": 256},
    {"image_size": 24, "width": 16, "epochs": 6, "folds": 0, "batch_size": 256},
    {"image_size": 24, "width": 16, "epochs": 8, "folds": 0, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 8, "folds": 0, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 12, "folds": 0, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 16, "folds": 0, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 20, "folds": 0, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 16, "folds": 2, "batch_size": 256},
    {"image_size": 32, "width": 16, "epochs": 16, "folds": 4, "batch_size": 256},
    {"image_size": 32, "width": 32, "epochs": 16, "folds": 4, "batch_size": 512},
    {},  # the full-size settings: DynamicsConfig's own defaults
)
"""Candidate settings from cheapest to most capable, each costlier than the one before; each names only what
differs from the defaults.  The order is what detection per second measured on 50,000 CIFAR-10 images with 20 %
symmetric noise on 2 cores (docs/benchmarks.md): resolution first (8 epochs, width 16: AUROC 0.968 at 16 px,
0.979 at 24 px, where doubling the width at 16 px gave 0.974 for more time), then the recording run's epochs,
and cross-fitting last: its folds multiply the cost and add no detection the recording run lacks (at 180 s,
5 epochs plus 2 folds detected the noise with AUROC 0.90 where 8 epochs alone reached 0.97; at 900 s, 32 px with
12 epochs and 2 folds reached 0.984 with the recording run's final loss and 0.977 with cleanlab).  Cross-fitting gives the ``cleanlab.*`` scores; a user who wants
them on a large dataset at a small budget fixes ``folds``."""

MIN_EPOCHS = 4
"""Below this a proxy has not yet learned the clean samples: a plan never goes lower."""

MIN_STEPS_PER_EPOCH = 16
"""A planned batch size never leaves an epoch with fewer optimiser steps than this (small datasets)."""

MIN_BATCH_SIZE = 16
"""...unless that would take the batch below this (BatchNorm statistics of smaller batches are noise)."""

PROBE_STEPS = 8
PROBE_EMBEDDING_DIM = 512
PROBE_CODE_VERSION = 2


@dataclass(frozen=True)
class Rates:
    """Measured throughput of one proxy setting on one device: samples per second."""

    train: float
    eval: float


@dataclass(frozen=True)
class DynamicsPlan:
    """What a dynamics step will run and about how long it will take."""

    config: Any  # DynamicsConfig (concrete: every planned field set)
    n_samples: int
    estimate_s: float
    budget_s: Optional[float]
    rates: Rates
    device: str
    fixed: tuple[str, ...] = ()
    rung: int = -1
    """Index into :data:`RUNGS` (-1: nothing was planned, every setting was given)."""
    policy: Optional[DevicePolicy] = None
    """The device policy's decisions (precision, where the data lives, ...) for this run."""

    @property
    def memory(self) -> tuple[int, int]:
        """(training data bytes, working-set bytes) the run needs on its device: :func:`memory_needs`."""
        return memory_needs(self.config, self.n_samples)

    @property
    def fits(self) -> bool:
        return self.budget_s is None or self.estimate_s <= self.budget_s

    def describe(self) -> str:
        """One line for the page and the terminal, shown before the run starts."""
        c = self.config
        folds = f"{c.folds} cross-fitting folds" if c.folds >= 2 else "no cross-fitting (no cleanlab)"
        model = (f"ResNet-9 width {c.width} at {c.image_size} px" if c.arch == "resnet9"
                 else f"{c.arch} probe on the CLIP embeddings")
        line = (f"{model}, {c.epochs} epochs, {folds}, batch {c.batch_size} on {self.device}: about "
                f"{format_seconds(self.estimate_s)} for {self.n_samples:,} samples "
                f"(measured {self.rates.train:,.0f} training samples/s)")
        if self.budget_s is not None:
            line += f"; budget {format_seconds(self.budget_s)}"
            if not self.fits:
                why = "with the settings you fixed" if self.fixed else "even at the cheapest settings"
                line += f" — over budget {why}; the run stops when the budget is spent"
        if self.policy is not None:
            line += f". Device: {self.policy.describe(*self.memory)}"
        return line

    def as_dict(self) -> dict:
        """For the score sidecar and the export manifest."""
        out = {"settings": {f: getattr(self.config, f) for f in PLANNED_FIELDS}, "estimate_s": round(self.estimate_s, 1),
               "budget_s": self.budget_s, "device": self.device, "fixed": list(self.fixed), "rung": self.rung,
               "rates": asdict(self.rates)}
        if self.policy is not None:
            data, working = self.memory
            out.update(device_policy=self.policy.as_dict(), memory={"data_bytes": data, "working_bytes": working,
                                                                    "data_on_device": self.policy.data_on_device(data, working)})
        return out


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def estimate_seconds(config: Any, n_samples: int, rates: Rates) -> float:
    """Seconds of one dynamics step (recording run plus cross-fitting) at ``rates``; see the module doc."""
    epochs, folds = int(config.epochs), int(config.folds)
    train = epochs * n_samples * max(folds, 1)
    evals = epochs * n_samples + (n_samples if folds >= 2 else 0)
    return train / rates.train + evals / rates.eval


def memory_needs(config: Any, n_samples: int, num_classes: int = 10, in_dim: int = PROBE_EMBEDDING_DIM) -> tuple[int, int]:
    """(bytes of the training data, bytes of one step's working set) of ``config`` over ``n_samples``.

    The data is what :class:`~pruning_core.dynamics.device_data.DeviceData` holds: uint8 images, unpadded
    (or float32 embeddings); the working set is :func:`~pruning_core.dynamics.models.training_working_bytes`.
    """
    from pruning_core.dynamics.models import training_working_bytes

    precision = resolve_precision(resolve_device(config.device), config.precision)
    if config.arch == "resnet9":
        data = n_samples * config.image_size ** 2 * 3
    else:
        data = n_samples * in_dim * 4
    working = training_working_bytes(config.arch, batch_size=config.batch_size, width=config.width,
                                     image_size=config.image_size, in_dim=in_dim, num_classes=num_classes,
                                     precision=precision)
    return int(data), working


def planned_batch_size(batch_size: int, n_samples: int) -> int:
    """``batch_size`` halved until an epoch over ``n_samples`` has :data:`MIN_STEPS_PER_EPOCH` steps (not below
    :data:`MIN_BATCH_SIZE`): a small subset trained at a large batch gets one or two steps an epoch and learns nothing."""
    bs = int(batch_size)
    while bs > MIN_BATCH_SIZE and n_samples // bs < MIN_STEPS_PER_EPOCH:
        bs //= 2
    return max(bs, min(MIN_BATCH_SIZE, int(batch_size)))


def _device_signature(dev: torch.device) -> dict:
    """What makes a throughput measurement valid elsewhere: the device, its threads, torch itself."""
    sig = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        sig["name"] = torch.cuda.get_device_name(dev)
    else:
        import platform

        sig["cpu"] = platform.processor() or platform.machine()
    return sig


def measure_rates(
    config: Any,
    *,
    num_classes: int,
    store: Optional[ResultStore] = None,
) -> Rates:
    """Training and evaluation images/s of ``config``'s proxy on its device (cached per device and setting).

    Runs the real :class:`~pruning_core.dynamics.trainer.ProxyTrainer` (same precision, memory layout
    and augmentation as a real run) for two warm-up and :data:`PROBE_STEPS` timed steps on random images,
    each step timed alone.  Fewer steps read 2x slow on CPU (first-iteration allocator and oneDNN costs).
    """
    dev = resolve_device(config.device)
    params = {"image_size": config.image_size, "width": config.width, "batch_size": config.batch_size,
              "arch": config.arch, "num_classes": num_classes, "version": PROBE_CODE_VERSION,
              **_precision(config), **_device_signature(dev)}
    if store is None:
        return _timed_steps(config, dev, num_classes)
    entry = CachedStep("throughput-probe", "machine", params).run(
        store, lambda: Computed(meta={"rates": asdict(_timed_steps(config, dev, num_classes))}))
    return Rates(**entry.meta["rates"])


def _timed_steps(config: Any, dev: torch.device, num_classes: int) -> Rates:
    """Rates from :data:`PROBE_STEPS` timed training and evaluation steps on random inputs (see :func:`measure_rates`)."""
    from pruning_core.dynamics.trainer import proxy_trainer

    bs = int(config.batch_size)
    n = bs * (PROBE_STEPS + 2)
    rng = np.random.default_rng(0)
    if config.arch == "resnet9":
        x = rng.integers(0, 256, size=(n, config.image_size, config.image_size, 3), dtype=np.uint8)
    else:  # a probe on embeddings: CLIP ViT-B's width stands for any
        x = rng.standard_normal((n, PROBE_EMBEDDING_DIM), dtype=np.float32)
    y = rng.integers(0, num_classes, size=n)
    batches = torch.arange(n).view(-1, bs)
    with proxy_trainer(x, y, device=dev, seed=0, epochs=1, num_classes=num_classes, arch=config.arch,
                       width=config.width, batch_size=bs, **_precision(config)) as trainer:
        batches = batches.to(trainer.dev)
        train_s, eval_s = [], []
        for i, batch in enumerate(batches):  # the first two warm up: allocator, oneDNN/cuDNN kernel choice
            t0 = time.perf_counter()
            trainer.train_epoch(batch)
            t1 = time.perf_counter()
            for _ in trainer.logits(batch, chunk=bs):
                pass
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                train_s.append(t1 - t0)
                eval_s.append(time.perf_counter() - t1)
    # The median step: a burst of load from another process on a shared machine moves it little.
    return Rates(train=bs / max(float(np.median(train_s)), 1e-9), eval=bs / max(float(np.median(eval_s)), 1e-9))


def _precision(config: Any) -> dict:
    """The config's precision as a trainer option (bf16 and fp32 run at different rates, so it keys the probe)."""
    return {"precision": resolve_precision(resolve_device(config.device), config.precision)}


def plan_dynamics(
    config: Any,
    n_samples: int,
    *,
    num_classes: int,
    budget_s: Optional[float],
    fixed: Iterable[str] = (),
    store: Optional[ResultStore] = None,
    progress: Optional[ProgressCallback] = None,
    estimate: Optional[Callable[[Any, Rates], float]] = None,
    batch_samples: Optional[int] = None,
) -> DynamicsPlan:
    """The most capable rung of :data:`RUNGS` that fits ``budget_s``, with the ``fixed`` fields of ``config`` kept.

    Without a budget, ``config`` runs as given (its defaults are the full-size settings) and the
    plan only carries the estimate.  Rungs are probed cheapest first and the search stops at the
    first that does not fit: a more capable rung is never cheaper.  When even the cheapest rung is
    over budget it is chosen anyway and :attr:`DynamicsPlan.fits` says so.  ``estimate(config, rates)``
    replaces the dynamics step's cost model (:func:`estimate_seconds`) for other training-based steps;
    ``batch_samples`` is the sample count a planned batch must give the floor of steps (default ``n_samples``;
    the Evaluate grid passes its smallest subset, so the probe measures the batch every run will use).
    """
    cost = estimate or (lambda candidate, rates: estimate_seconds(candidate, n_samples, rates))
    fixed = tuple(sorted(set(fixed) & set(PLANNED_FIELDS)))
    dev = str(resolve_device(config.device))
    policy = device_policy(config.device, config.precision)

    def with_rung(rung: Mapping[str, int]) -> Any:
        defaults = type(config)()
        chosen = {f: rung.get(f, getattr(defaults, f)) for f in PLANNED_FIELDS if f not in fixed}
        candidate = replace(config, **chosen)
        if "batch_size" not in fixed:
            candidate = replace(candidate, batch_size=planned_batch_size(candidate.batch_size, batch_samples or n_samples))
        return candidate

    def plan_of(candidate: Any, rung: int) -> DynamicsPlan:
        rates = measure_rates(candidate, num_classes=num_classes, store=store)
        return DynamicsPlan(candidate, n_samples, cost(candidate, rates), budget_s, rates, dev, fixed, rung, policy)

    if budget_s is None or config.arch != "resnet9":
        return plan_of(config, -1)
    best: Optional[DynamicsPlan] = None
    seen: set = set()
    for i, rung in enumerate(RUNGS):
        candidate = with_rung(rung)
        if candidate in seen:
            continue
        seen.add(candidate)
        report(progress, "throughput probe", i, len(RUNGS), f"width {candidate.width} at {candidate.image_size} px")
        plan = plan_of(candidate, i)
        if best is not None and not plan.fits:
            break
        best = plan
        if not plan.fits:
            break
    report(progress, "throughput probe", len(RUNGS), len(RUNGS))
    assert best is not None
    return best if best.fits else _shrunk_to_fit(best, cost)


def _shrunk_to_fit(plan: DynamicsPlan, cost: Callable[[Any, Rates], float]) -> DynamicsPlan:
    """The cheapest rung over budget: fewer epochs, down to :data:`MIN_EPOCHS` (unless the user fixed them)."""
    if "epochs" in plan.fixed:
        return plan
    config = plan.config
    epochs = min(config.epochs, max(MIN_EPOCHS, int(config.epochs * plan.budget_s / plan.estimate_s)))
    candidate = replace(config, epochs=epochs)
    return replace(plan, config=candidate, estimate_s=cost(candidate, plan.rates))
