"""Plan a training-based step so it finishes in the time the user gave it, on the machine at hand.

The proxy's full-size settings (ResNet-9 width 64 at 32 px, 16 epochs, 4 cross-fitting folds: the
defaults of :class:`~pruning_core.dynamics.config.DynamicsConfig`) take seconds on a GPU and tens of
minutes on a 2-core CPU.  Rather than one set of defaults that is wrong on one of them, the default
is a *time budget*: a short throughput probe on the real device measures how many images per second
each candidate setting trains and evaluates (a few batches, cached per device, thread count and setting), and
:func:`plan_dynamics` picks the most capable rung of :data:`RUNGS` whose estimated time fits.  Any
setting the user gives explicitly is kept as given; the planner only fills in the rest.  The plan
(settings, estimate, measured rates, the device policy's decisions and the memory the run needs) is
shown before the run starts and recorded with its results.

What is measured comes from the step that owns it: the dynamics step passes a :class:`Probe`
(``pruning_core.dynamics.probe.PROXY_PROBE``), so this ground-floor module imports nothing above it.

A measurement describes the machine *when it was taken*: on a shared machine the same setting trains
30x slower while other jobs hold the cores.  So a recorded probe is used again only while it is
younger than :data:`PROBE_MAX_AGE_S`, while the load other processes put on the CPUs is within
:func:`load_margin` of the load it was taken at, and until a finished run trains at a rate more than
:data:`RATE_MARGIN` away from it (:func:`check_run_rate`); otherwise it is measured again.  The plan
line says how old its measurement is and at what load it was taken.

The budget covers the whole step, not only training: the time already spent when planning (loading,
the probes themselves: ``DynamicsPlan.spent_s``) and the decoding still to do (``decode_s``) are taken
off before the rungs are fitted, and the run's deadline is the rest of the budget from when the step
starts (``scoring.pipeline.dynamics_score_table(budget_spent_s=plan.spent_s)``).

Cost model of one dynamics step over N samples with E epochs and k folds (k >= 2): the recording run
trains E·N samples (its per-epoch statistics come from the training pass) and evaluates all N once,
after the last epoch; cross-fitting trains k models on the trusted share s of (k-1)/k of the data
(``DynamicsConfig.crossfit_share``), i.e. E·N·s·(k-1) more training samples, and evaluates each held-out fold
once.  So ``train = E·N·(1 + s·(k-1))`` and ``eval = N + N`` sample-passes (``train = E·N`` and ``eval = N``
without folds), each divided by its measured rate.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

import torch

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.runtime.devices import (DevicePolicy, ThreadChoice, ThreadPolicy, affinity_cpus, device_policy,
                                          load_average, resolve_device, resolve_precision)
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
    {"image_size": 32, "width": 32, "epochs": 16, "folds": 2, "batch_size": 512},
    {"image_size": 32, "width": 32, "epochs": 16, "folds": 4, "batch_size": 512},
    {"image_size": 32, "width": 48, "epochs": 16, "folds": 4, "batch_size": 512},
    {},  # the full-size settings: DynamicsConfig's own defaults
)
"""Candidate settings from cheapest to most capable, each costlier than the one before; each names only what
differs from the defaults.  The order is what detection per second measured on 50,000 CIFAR-10 images with 20 %
symmetric noise on 2 cores (docs/benchmarks.md; widths 32 with 2 folds and 48 are there so no step up the
ladder costs more than about 2.3x the one below, see :data:`MAX_EPOCH_STRETCH`): resolution first (8 epochs, width 16: AUROC 0.968 at 16 px,
0.979 at 24 px, where doubling the width at 16 px gave 0.974 for more time), then the recording run's epochs,
and cross-fitting last: its folds multiply the cost (at 180 s, 5 epochs plus 2 folds detected the noise with
AUROC 0.90 where 8 epochs alone reached 0.97; at 900 s, 32 px with 12 epochs and 2 folds reached 0.984 with the
recording run's final loss and 0.977 with cleanlab).  Cleaned folds (``DynamicsConfig.crossfit_share``) cost 0.6x
and add a second opinion to the noise score (10,000 sym40 images: AUROC 0.934 -> 0.942, docs/benchmarks.md,
"Cleaned cross-fitting"), which is why a budget that has room for them spends it there.  Cross-fitting gives the ``cleanlab.*`` scores; a user who wants
them on a large dataset at a small budget fixes ``folds``."""

RUNG_EVIDENCE: Mapping[str, Mapping[int, float]] = {
    "asym40": {0: 0.909, 1: 0.936, 2: 0.944, 3: 0.957, 4: 0.959},
    "confusable30": {1: 0.908, 3: 0.940, 4: 0.946},
    "sym20": {1: 0.968, 3: 0.979, 4: 0.982},
}
"""What each rung of :data:`RUNGS` (by index) detected: AUROC of ``dynamics.noise_score`` (the default detector) on
all 50,000 CIFAR-10 images, one recording run per rung at its epochs (docs/benchmarks.md, "Noise detectors on
class-dependent noise"; sym20 from "What the ladder spends a budget on", where the final loss ranks as the noise
score does under uniform noise).  The order of the rungs must follow it: a costlier rung detects at least as well
(tests/test_planner.py checks it)."""

MIN_EPOCHS = 4
"""Below this a proxy has not yet learned the clean samples: a plan never goes lower."""

MAX_EPOCH_STRETCH = 2.0
"""A rung whose next rung does not fit trains up to this many times its epochs to spend the budget: with
the ladder's steps at most ~2.3x apart this leaves less than a third of a budget unspent."""

MAX_STRETCHED_EPOCHS = 20
"""...and never past this many: the most epochs a rung's evidence covers.  Beyond it the width-16 proxy starts to
memorise uniform noise (sym40 at B = 900: 20 epochs at 32 px detected with AUROC 0.980, 26 epochs 0.975;
docs/benchmarks.md), so the rest of such a budget is left unspent rather than spent on worse scores."""

MIN_STEPS_PER_EPOCH = 16
"""A planned batch size never leaves an epoch with fewer optimiser steps than this (small datasets)."""

MIN_BATCH_SIZE = 16
"""...unless that would take the batch below this (BatchNorm statistics of smaller batches are noise)."""

TAIL_SHARE = 0.03
"""Share of a budget kept for what follows training (the scores, writing the table, the process's exit): plans and
deadlines use the rest.  On 50,000 CIFAR-10 images that tail took 1.3 s of a 180-s budget on an idle machine (5 %,
the share before, left 8 s unspent); under heavy load the exit alone took up to 9 s (docs/benchmarks.md, "The
budget covers the whole step" and "A first run's seconds")."""

PROBE_MAX_AGE_S = 6 * 3600.0
"""A recorded probe older than this is measured again (drivers, clocks and neighbours change)."""

RATE_MARGIN = 0.35
"""A finished run whose training rate is more than this fraction away from its probe's marks the probe stale."""

LOAD_MARGIN_SHARE = 0.25
"""The probe is measured again when the cores other processes leave free changed by at least this share of the
CPUs (and at least one core) since it was taken: :func:`load_margin`."""


@dataclass(frozen=True)
class Rates:
    """Measured throughput of one proxy setting on one device: samples per second."""

    train: float
    eval: float


class Probe(Protocol):
    """What the planner measures and sizes, provided by the step that owns the training (the dynamics step)."""

    version: int
    """Keys the recorded measurements: a change to what is timed makes earlier ones invalid."""

    def rates(self, config: Any, num_classes: int) -> Rates:
        """Training and evaluation samples/s of ``config`` on its device, measured now."""

    def memory(self, config: Any, n_samples: int, num_classes: int) -> tuple[int, int]:
        """(training data bytes, working-set bytes) a run of ``config`` over ``n_samples`` needs on its device."""


@dataclass(frozen=True)
class Machine:
    """What the machine reports at planning time (read by :func:`read_machine`, faked in tests)."""

    now: float
    """``time.time()``: measurements are recorded with wall time, so their age survives restarts."""
    cpus: int
    others_load: float
    """Load other processes put on the CPUs (the thread policy's estimate)."""
    threads: Optional[ThreadChoice]
    """The CPU thread policy's choice; None on an accelerator (its throughput does not depend on CPU threads)."""


def read_machine(dev: torch.device) -> Machine:
    if dev.type != "cpu":
        return Machine(time.time(), affinity_cpus(), load_average(), None)
    choice = ThreadPolicy().choice
    return Machine(time.time(), choice.cpus, choice.others_load, choice)


@dataclass(frozen=True)
class Measurement:
    """One recorded throughput probe: the rates and the machine they were measured on."""

    rates: Rates
    measured_at: float
    others_load: float
    threads: Optional[int]
    remeasured: Optional[str] = None
    """Why an earlier measurement of this setting was replaced (None: first one, or reused)."""

    def as_meta(self) -> dict:
        return {"rates": asdict(self.rates), "measured_at": self.measured_at, "others_load": self.others_load,
                "threads": self.threads, "remeasured": self.remeasured}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "Measurement":
        return cls(Rates(**meta["rates"]), float(meta["measured_at"]), float(meta["others_load"]), meta.get("threads"),
                   meta.get("remeasured"))


def load_margin(cpus: int) -> float:
    """Free cores a probe's machine may gain or lose before it is measured again (see :data:`LOAD_MARGIN_SHARE`)."""
    return max(1.0, LOAD_MARGIN_SHARE * cpus)


def stale_reason(measurement: Measurement, machine: Machine) -> Optional[str]:
    """Why ``measurement`` no longer describes ``machine`` (None: it still does); a pure function of both."""
    age = machine.now - measurement.measured_at
    if age > PROBE_MAX_AGE_S:
        return f"the measurement was {format_age(age)} old"
    if machine.threads is not None:
        free_then = max(0.0, machine.cpus - measurement.others_load)
        free_now = max(0.0, machine.cpus - machine.others_load)
        if abs(free_now - free_then) >= load_margin(machine.cpus):
            return f"the load changed from {measurement.others_load:.1f} to {machine.others_load:.1f}"
    return None


def check_run_rate(plan: "DynamicsPlan", run: Mapping[str, Any], store: Optional[ResultStore]) -> Optional[dict]:
    """Compare a finished run's training rate with its plan's probe; forget the probe if they disagree.

    ``run`` is what the run recorded (``samples_trained``, ``train_seconds``, ``finished_at``: the
    dynamics settings of its score table).  A run older than the probe (a record from the cache) says
    nothing about it: None.  Otherwise both rates are returned for the run's record, and beyond
    :data:`RATE_MARGIN` the probe's entry is dropped, so the next plan of this setting measures again
    (the run saw another machine than the probe did).
    """
    finished, samples, seconds = run.get("finished_at"), run.get("samples_trained"), run.get("train_seconds")
    measured_at = plan.measurement.measured_at if plan.measurement is not None else 0.0
    if finished is None or not samples or not seconds or finished < measured_at:
        return None
    run_rate = samples / seconds
    ratio = run_rate / plan.rates.train
    forget = abs(ratio - 1.0) > RATE_MARGIN
    if forget and store is not None and plan.probe_step is not None:
        plan.probe_step.forget(store)
    return {"probe_train_rate": round(plan.rates.train, 1), "run_train_rate": round(run_rate, 1),
            "ratio": round(ratio, 3), "probe_forgotten": forget}


@dataclass(frozen=True)
class DynamicsPlan:
    """What a dynamics step will run and about how long it will take."""

    config: Any  # DynamicsConfig (concrete: every planned field set)
    n_samples: int
    estimate_s: float
    """Training and evaluation (the cost model)."""
    budget_s: Optional[float]
    rates: Rates
    device: str
    fixed: tuple[str, ...] = ()
    rung: int = -1
    """Index into :data:`RUNGS` (-1: nothing was planned, every setting was given)."""
    policy: Optional[DevicePolicy] = None
    """The device policy's decisions (precision, where the data lives, ...) for this run."""
    memory: tuple[int, int] = (0, 0)
    """(training data bytes, working-set bytes) the run needs on its device: ``Probe.memory``."""
    measurement: Optional[Measurement] = None
    machine: Optional[Machine] = None
    spent_s: float = 0.0
    """Budget already spent when the plan was made (loading the dataset, the probes): the run gets the rest."""
    decode_s: float = 0.0
    """Estimated work outside training still to come (decoding the images when they are not cached)."""
    probe_step: Optional[CachedStep] = None

    @property
    def overhead_s(self) -> float:
        return self.spent_s + self.decode_s

    @property
    def fits(self) -> bool:
        return self.budget_s is None or self.estimate_s + self.overhead_s <= self.budget_s * (1 - TAIL_SHARE)

    def describe(self) -> str:
        """One line for the page and the terminal, shown before the run starts."""
        c = self.config
        trained_on = f" on the cleanest {c.crossfit_share:.0%}" if c.crossfit_share < 1 else ""
        folds = f"{c.folds} cross-fitting folds{trained_on}" if c.folds >= 2 else "no cross-fitting (no cleanlab)"
        model = (f"ResNet-9 width {c.width} at {c.image_size} px" if c.arch == "resnet9"
                 else f"{c.arch} probe on the CLIP embeddings")
        grows = (f" (up to {c.max_epochs} if the first epoch runs faster than measured)"
                 if c.max_epochs and c.max_epochs > c.epochs else "")
        line = (f"{model}, {c.epochs} epochs{grows}, {folds}, batch {c.batch_size} on {self.device}: about "
                f"{format_seconds(self.estimate_s)} for {self.n_samples:,} samples")
        if self.overhead_s >= 1:
            line += f" (+ {format_seconds(self.overhead_s)} loading, probing and decoding)"
        line += f" ({self._measured()})"
        if self.budget_s is not None:
            line += f"; budget {format_seconds(self.budget_s)}"
            if not self.fits:
                why = "with the settings you fixed" if self.fixed else "even at the cheapest settings"
                line += f" — over budget {why}; the run stops when the budget is spent"
        if self.machine is not None and self.machine.threads is not None:
            line += f"; {self.machine.threads.describe()}"
        if self.policy is not None:
            line += f". Device: {self.policy.describe(*self.memory)}"
        return line

    def _measured(self) -> str:
        text = f"measured {self.rates.train:,.0f} training samples/s"
        m, machine = self.measurement, self.machine
        if m is None or machine is None:
            return text
        text += f" {format_age(machine.now - m.measured_at)} ago at load {m.others_load:.1f}"
        if m.remeasured:
            text += f", measured again: {m.remeasured}"
        return text

    def as_dict(self) -> dict:
        """For the score sidecar and the export manifest."""
        out = {"settings": {f: getattr(self.config, f) for f in PLANNED_FIELDS}, "estimate_s": round(self.estimate_s, 1),
               "spent_s": round(self.spent_s, 1), "decode_s": round(self.decode_s, 1), "budget_s": self.budget_s, "device": self.device,
               "fixed": list(self.fixed), "rung": self.rung, "rates": asdict(self.rates)}
        if self.measurement is not None:
            out["measurement"] = self.measurement.as_meta()
        if self.machine is not None and self.machine.threads is not None:
            out["threads"] = asdict(self.machine.threads)
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


def format_age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_seconds(config: Any, n_samples: int, rates: Rates) -> float:
    """Seconds of one dynamics step (recording run plus cross-fitting) at ``rates``; see the module doc."""
    epochs, folds = int(config.epochs), int(config.folds)
    crossfit = config.crossfit_share * (folds - 1) if folds >= 2 else 0.0
    train = epochs * n_samples * (1 + crossfit)
    evals = n_samples + (n_samples if folds >= 2 else 0)
    return train / rates.train + evals / rates.eval


def planned_batch_size(batch_size: int, n_samples: int) -> int:
    """``batch_size`` halved until an epoch over ``n_samples`` has :data:`MIN_STEPS_PER_EPOCH` steps (not below
    :data:`MIN_BATCH_SIZE`): a small subset trained at a large batch gets one or two steps an epoch and learns nothing."""
    bs = int(batch_size)
    while bs > MIN_BATCH_SIZE and n_samples // bs < MIN_STEPS_PER_EPOCH:
        bs //= 2
    return max(bs, min(MIN_BATCH_SIZE, int(batch_size)))


def _device_signature(dev: torch.device, machine: Machine) -> dict:
    """What makes a throughput measurement valid elsewhere: the device, the threads it runs on, torch itself."""
    sig = {"device": str(dev), "torch": torch.__version__}
    if dev.type == "cuda":
        sig["name"] = torch.cuda.get_device_name(dev)
    else:
        sig["cpu"] = platform.processor() or platform.machine()
        sig["threads"] = machine.threads.threads if machine.threads is not None else torch.get_num_threads()
    return sig


def probe_step(config: Any, probe: Probe, num_classes: int, machine: Machine) -> CachedStep:
    """The cache step of ``config``'s throughput measurement (per device, thread count and setting)."""
    dev = resolve_device(config.device)
    params = {"image_size": config.image_size, "width": config.width, "batch_size": config.batch_size,
              "arch": config.arch, "num_classes": num_classes, "version": probe.version,
              "precision": resolve_precision(dev, config.precision), **_device_signature(dev, machine)}
    return CachedStep("throughput-probe", "machine", params)


def measure(config: Any, probe: Probe, *, num_classes: int, machine: Machine,
            store: Optional[ResultStore] = None) -> Measurement:
    """``config``'s rates on its device: the recorded measurement while :func:`stale_reason` finds none, else a new one."""
    threads = machine.threads.threads if machine.threads is not None else None

    def measured(why: Optional[str] = None) -> Measurement:
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)  # the probe runs at the thread count it is keyed by
        try:
            rates = probe.rates(config, num_classes)
        finally:
            torch.set_num_threads(before)
        return Measurement(rates, machine.now, machine.others_load, threads, why)

    if store is None:
        return measured()
    why: list[str] = []

    def reuse(entry) -> bool:
        reason = stale_reason(Measurement.from_meta(entry.meta), machine)
        why.append(reason) if reason else None
        return reason is None

    step = probe_step(config, probe, num_classes, machine)
    entry = step.run(store, lambda: Computed(meta=measured(why[0] if why else None).as_meta()), reuse=reuse)
    return Measurement.from_meta(entry.meta)


def process_started() -> float:
    """The ``time.monotonic()`` at which this process started (Linux), else now.

    A budget given on the command line is a promise about the command's wall time, so its clock starts
    with the interpreter: on a loaded machine, importing torch and the rest takes tens of seconds.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        age = since_boot - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks
    except (OSError, IndexError, ValueError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


def plan_dynamics(
    config: Any,
    n_samples: int,
    *,
    num_classes: int,
    budget_s: Optional[float],
    probe: Probe,
    fixed: Iterable[str] = (),
    store: Optional[ResultStore] = None,
    progress: Optional[ProgressCallback] = None,
    estimate: Optional[Callable[[Any, Rates], float]] = None,
    batch_samples: Optional[int] = None,
    started: Optional[float] = None,
    overhead_s: Optional[Callable[[Any], float]] = None,
    grows: bool = False,
) -> DynamicsPlan:
    """The most capable rung of :data:`RUNGS` that fits ``budget_s``, with the ``fixed`` fields of ``config`` kept.

    Without a budget, ``config`` runs as given (its defaults are the full-size settings) and the
    plan only carries the estimate.  Rungs are probed cheapest first and the search stops at the
    first that does not fit: a more capable rung is never cheaper.  The chosen rung then trains more
    epochs (up to :data:`MAX_EPOCH_STRETCH` times) while they fit, so the gap to the next rung is
    not left unspent.  When even the cheapest rung is over budget it is chosen anyway, with fewer
    epochs, and :attr:`DynamicsPlan.fits` says so.  ``probe`` measures and sizes a setting (the
    dynamics step's ``PROXY_PROBE``).  ``estimate(config, rates)`` replaces the dynamics step's cost
    model (:func:`estimate_seconds`) for other training-based steps; ``batch_samples`` is the sample
    count a planned batch must give the floor of steps (default ``n_samples``; the Evaluate grid
    passes its smallest subset, so the probe measures the batch every run will use).

    The budget covers the whole step: ``started`` is the ``time.monotonic()`` at which its clock
    started (default: now), so the time spent loading and probing counts, and ``overhead_s(candidate)``
    is the work outside training still to come for a candidate (decoding its images when they are not
    cached).

    ``grows``: the run can grow into more epochs when its first epoch shows the budget has room (the dynamics
    step's recording run: ``train_and_record``'s ``max_epochs``).  A stretched plan without cross-fitting then
    sets ``max_epochs`` to the stretch's cap, so a probe that read the machine slow costs no budget.
    """
    started = time.monotonic() if started is None else started
    cost = estimate or (lambda candidate, rates: estimate_seconds(candidate, n_samples, rates))
    outside = overhead_s or (lambda candidate: 0.0)
    fixed = tuple(sorted(set(fixed) & set(PLANNED_FIELDS)))
    dev = resolve_device(config.device)
    policy = device_policy(config.device, config.precision)
    machine = read_machine(dev)

    def with_rung(rung: Mapping[str, int]) -> Any:
        defaults = type(config)()
        chosen = {f: rung.get(f, getattr(defaults, f)) for f in PLANNED_FIELDS if f not in fixed}
        candidate = replace(config, **chosen)
        if "batch_size" not in fixed:
            candidate = replace(candidate, batch_size=planned_batch_size(candidate.batch_size, batch_samples or n_samples))
        return candidate

    def plan_of(candidate: Any, rung: int) -> DynamicsPlan:
        measurement = measure(candidate, probe, num_classes=num_classes, machine=machine, store=store)
        return DynamicsPlan(candidate, n_samples, cost(candidate, measurement.rates), budget_s, measurement.rates,
                            str(dev), fixed, rung, policy, probe.memory(candidate, n_samples, num_classes),
                            measurement, machine, time.monotonic() - started, outside(candidate),
                            probe_step(candidate, probe, num_classes, machine))

    if budget_s is None or config.arch != "resnet9":
        return plan_of(config, -1)
    best: Optional[DynamicsPlan] = None
    seen: set = set()
    capped = False  # a more capable rung exists that did not fit
    for i, rung in enumerate(RUNGS):
        candidate = with_rung(rung)
        if candidate in seen:
            continue
        seen.add(candidate)
        report(progress, "throughput probe", i, len(RUNGS), f"width {candidate.width} at {candidate.image_size} px")
        plan = plan_of(candidate, i)
        if best is not None and not plan.fits:
            capped = True
            break
        best = plan
        if not plan.fits:
            break
    report(progress, "throughput probe", len(RUNGS), len(RUNGS))
    assert best is not None
    # the clock ran on while the rungs above were probed
    best = replace(best, spent_s=time.monotonic() - started)
    if not best.fits:
        return _epochs_to_fit(best, cost, 1.0)
    if not capped:
        return best
    stretched = _epochs_to_fit(best, cost, MAX_EPOCH_STRETCH)
    if not grows or "epochs" in fixed or stretched.config.folds >= 2:  # cross-fitting spends what the run leaves
        return stretched
    return replace(stretched, config=replace(stretched.config, max_epochs=_stretch_cap(best.config.epochs)))


def _stretch_cap(epochs: int) -> int:
    """The most epochs a rung of ``epochs`` is stretched to: :data:`MAX_EPOCH_STRETCH` times its own, at most
    :data:`MAX_STRETCHED_EPOCHS` (unless it has more already), at least :data:`MIN_EPOCHS`."""
    return min(max(MIN_EPOCHS, int(epochs * MAX_EPOCH_STRETCH)), max(int(epochs), MAX_STRETCHED_EPOCHS))


def _epochs_to_fit(plan: DynamicsPlan, cost: Callable[[Any, Rates], float], stretch: float) -> DynamicsPlan:
    """``plan`` with the most epochs that fit its budget, between :data:`MIN_EPOCHS` and ``stretch`` times its own
    (a stretch stops at :data:`MAX_STRETCHED_EPOCHS`).

    Over budget (``stretch`` 1) this shrinks the cheapest rung; under it, it spends what the next
    rung up could not use.  Epochs the user fixed are kept.
    """
    config = plan.config
    if "epochs" in plan.fixed or plan.budget_s is None:
        return plan
    available = plan.budget_s * (1 - TAIL_SHARE) - plan.overhead_s
    most = _stretch_cap(config.epochs) if stretch > 1 else max(MIN_EPOCHS, int(config.epochs))
    for epochs in range(most, MIN_EPOCHS - 1, -1):
        candidate = replace(config, epochs=epochs)
        estimate = cost(candidate, plan.rates)
        if estimate <= available or epochs == MIN_EPOCHS:
            if stretch > 1 and epochs <= config.epochs:
                return plan  # nothing to add
            return replace(plan, config=candidate, estimate_s=estimate)
    return plan
