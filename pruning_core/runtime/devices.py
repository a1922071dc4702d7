"""The device policy: every choice that depends on the hardware, made in one small pure function.

Where PruneScope runs ranges from a 2-core laptop to Colab's T4, a lab's V100/A100/H100, a 24 GB
consumer card and an Apple laptop.  What differs between them is read once into :class:`DeviceFacts`
(:func:`read_facts`: device type and index, compute capability, total/free memory, CPU bf16 hardware,
the CPUs this process may use, the size of ``/dev/shm``) and turned into decisions by
:func:`decide`, a pure function of those facts, so every decision is testable on a CPU by faking
the facts:

* **precision** - bf16 autocast on CUDA compute capability >= 8 and on CPUs with bf16 matrix
  hardware (AMX-BF16 / AVX512-BF16); fp16 autocast with a GradScaler on older CUDA GPUs (T4, V100:
  bf16 there is emulated and leaves cuDNN); fp32 elsewhere (MPS, plain CPUs).  Precision changes
  results, so it is part of every cache key it affects.
* **where training data lives** - device memory when data plus the training working set fit in
  the free memory with headroom, else pinned host memory copied batch by batch
  (:meth:`DevicePolicy.data_on_device`).  Results are the same either way.
* **k-NN block size** - 256 MiB blocks suit CPU caches; on a GPU larger blocks mean fewer, longer
  matmuls (1.28 M rows in 256 MiB blocks would be ~25,000 memory-bound launches).
* **loader workers and prefetch** - from the CPUs in this process's affinity (not
  ``os.cpu_count()``, which ignores container limits) and sized so the batches in flight fit
  ``/dev/shm`` (Docker's default is 64 MB: more and workers die with a bus error).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional

import torch

Precision = Literal["auto", "bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (``/proc/cpuinfo``) of hardware bf16 matrix units; without them bf16 is emulated and slower."""

GiB = 2**30
MiB = 2**20
CPU_KNN_BLOCK_BYTES = 256 * MiB
"""One similarity block on a CPU: bounded memory, cache-friendly."""
MAX_KNN_BLOCK_BYTES = 4 * GiB
DEVICE_MEMORY_FRACTION = 0.8
"""Training data plus working set may take this share of an accelerator's free memory (the rest is headroom
for the allocator's fragmentation, cuDNN workspaces and other processes)."""
SHM_FRACTION = 0.5
"""Batches in flight between loader workers may fill this share of /dev/shm."""
MAX_LOADER_WORKERS = 16
MAX_PREFETCH = 4


@dataclass(frozen=True)
class DeviceFacts:
    """What the hardware is; read by :func:`read_facts`, faked in tests.  Memory in bytes."""

    type: str  # "cuda" | "mps" | "cpu"
    index: Optional[int] = None
    name: str = ""
    capability: Optional[tuple[int, int]] = None  # CUDA compute capability
    total_memory: int = 0
    free_memory: int = 0
    cpu_bf16: bool = False
    cpus: int = 1  # CPUs in this process's affinity
    shm_bytes: Optional[int] = None  # free space in /dev/shm; None where there is none (macOS)

    @property
    def device(self) -> torch.device:
        return torch.device(self.type, self.index)

    def describe(self) -> str:
        gpu = f"{self.name}, cc {self.capability[0]}.{self.capability[1]}, " if self.capability else ""
        memory = f"{self.free_memory / GiB:.1f} of {self.total_memory / GiB:.1f} GiB free"
        shm = "no /dev/shm" if self.shm_bytes is None else f"/dev/shm {self.shm_bytes / MiB:,.0f} MiB"
        bf16 = ", CPU bf16 hardware" if self.cpu_bf16 else ""
        return f"{self.device} ({gpu}{memory}); {self.cpus} CPUs{bf16}; {shm}"


@dataclass(frozen=True)
class DevicePolicy:
    """What PruneScope does on one device; made by :func:`decide` from :class:`DeviceFacts`."""

    facts: DeviceFacts
    precision: str  # "bf16" | "fp16" | "fp32"
    grad_scaler: bool  # fp16 training needs loss scaling; bf16 has fp32's range and does not
    knn_block_bytes: int
    max_loader_workers: int

    @property
    def data_budget_bytes(self) -> Optional[int]:
        """How much training data plus working set may live on the device; None: no limit (the CPU's own RAM)."""
        if self.facts.type == "cpu":
            return None
        return int(self.facts.free_memory * DEVICE_MEMORY_FRACTION)

    def data_on_device(self, data_bytes: int, working_bytes: int = 0) -> bool:
        """Whether training data of ``data_bytes`` is kept on the device (else pinned host memory, copied per batch)."""
        budget = self.data_budget_bytes
        return budget is None or data_bytes + working_bytes <= budget

    def loader(self, batch_bytes: int) -> tuple[int, int]:
        """``(workers, prefetch per worker)`` whose batches in flight fit /dev/shm; ``(0, 0)``: decode here.

        Each worker hands its batches over through shared memory, ``workers x prefetch`` of them at once.
        """
        workers = self.max_loader_workers
        if self.facts.shm_bytes is None:
            return workers, MAX_PREFETCH
        fit = int(self.facts.shm_bytes * SHM_FRACTION) // max(1, int(batch_bytes))
        workers = min(workers, fit)
        if workers < 1:
            return 0, 0
        return workers, max(1, min(MAX_PREFETCH, fit // workers))

    def describe(self, data_bytes: Optional[int] = None, working_bytes: int = 0) -> str:
        """One line for the plan; with the run's memory needs it says where its data will live."""
        scaler = " + GradScaler" if self.grad_scaler else ""
        budget = self.data_budget_bytes
        if data_bytes is None:
            data = "in RAM" if budget is None else f"on the device up to {budget / GiB:.1f} GiB, else pinned host memory"
        else:
            where = ("in RAM" if budget is None else "on the device" if self.data_on_device(data_bytes, working_bytes)
                     else f"in pinned host memory (over the device's {budget / GiB:.1f} GiB)")
            data = f"{data_bytes / GiB:.2f} GiB {where}, {working_bytes / GiB:.2f} GiB working set"
        workers = self.max_loader_workers
        return (f"{self.precision}{scaler} on {self.facts.device}; training data {data}; k-NN blocks "
                f"{self.knn_block_bytes // MiB:,} MiB; {workers} loader worker{'s' if workers != 1 else ''} at most")

    def as_dict(self) -> dict:
        """For cache metadata, score sidecars and the export manifest."""
        facts = asdict(self.facts)
        return {"facts": facts, "precision": self.precision, "grad_scaler": self.grad_scaler,
                "knn_block_bytes": self.knn_block_bytes, "max_loader_workers": self.max_loader_workers,
                "data_budget_bytes": self.data_budget_bytes}


def decide(facts: DeviceFacts, precision: str = "auto") -> DevicePolicy:
    """The policy for ``facts``: a pure function, so every device's decisions are tested on a CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        if facts.type == "cuda":
            precision = "bf16" if facts.capability is not None and facts.capability[0] >= 8 else "fp16"
        elif facts.type == "cpu":
            precision = "bf16" if facts.cpu_bf16 else "fp32"
        else:  # MPS: fp32 until bf16/fp16 there is measured against it
            precision = "fp32"
    if facts.type == "cpu":
        block = CPU_KNN_BLOCK_BYTES
        workers = max(1, min(2, facts.cpus - 1))  # the model needs the cores; one or two decoders keep up
    else:
        block = min(MAX_KNN_BLOCK_BYTES, max(CPU_KNN_BLOCK_BYTES, facts.free_memory // 16))
        workers = max(1, min(MAX_LOADER_WORKERS, facts.cpus - 1))  # enough decoders to feed an accelerator
    return DevicePolicy(facts, precision, precision == "fp16", block, workers)


# --------------------------------------------------------------------------- reading the facts


@functools.lru_cache(maxsize=1)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def affinity_cpus() -> int:
    """CPUs this process may run on (container and taskset limits included, unlike ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def shm_free_bytes(path: str = "/dev/shm") -> Optional[int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


def _host_memory() -> tuple[int, int]:
    """(total, available) host memory in bytes."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(info["MemTotal"].split()[0]) * 1024, int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total // 2


def read_facts(device: torch.device) -> DeviceFacts:
    """The facts of ``device`` on this machine (CUDA memory is measured now: other processes use it too)."""
    common = dict(cpu_bf16=cpu_has_bf16(), cpus=affinity_cpus(), shm_bytes=shm_free_bytes())
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return DeviceFacts("cuda", index, torch.cuda.get_device_name(index),
                           tuple(torch.cuda.get_device_capability(index)), int(total), int(free), **common)
    total, available = _host_memory()
    if device.type == "mps":  # unified memory: what Metal recommends this process uses
        total = int(getattr(torch.mps, "recommended_max_memory", lambda: total)())
        return DeviceFacts("mps", None, "Apple GPU", None, total, min(total, available), **common)
    return DeviceFacts("cpu", None, "CPU", None, total, available, **common)


def device_policy(device: str | torch.device = "auto", precision: str = "auto") -> DevicePolicy:
    """:func:`decide` on the facts of ``device`` here."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return decide(read_facts(dev), precision)


# --------------------------------------------------------------------------- choosing the device


def missing_kernels(capability: tuple[int, int], arch_list: list[str] | tuple[str, ...]) -> bool:
    """Whether a torch build for ``arch_list`` (``torch.cuda.get_arch_list()``) cannot run on ``capability``.

    A cubin for sm_XY runs on the same major version with minor >= Y; PTX (``compute_XY``) is compiled
    at load for any capability >= XY.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = "".join(ch for ch in digits if ch.isdigit())
        if len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return False
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return False
    return True


def kernels_message(name: str, capability: tuple[int, int], arch_list: list[str] | tuple[str, ...],
                    torch_version: str) -> str:
    """What to tell a user whose torch has no kernels for their GPU: which wheel to install instead."""
    sm = f"sm_{capability[0]}{capability[1]}"
    built = ", ".join(arch_list) or "no CUDA architectures"
    if capability < (7, 5):  # Volta and older: the CUDA 12.6 wheels are the last with their kernels
        wheel = "pip install torch --index-url https://download.pytorch.org/whl/cu126"
    else:  # a GPU newer than this build: the newest CUDA wheels
        wheel = "pip install --upgrade torch --index-url https://download.pytorch.org/whl/cu130"
    return (f"{name} ({sm}) cannot run this torch {torch_version}: it has kernels for {built} only "
            f"('no kernel image is available' otherwise). Install a build with {sm} kernels: {wheel} "
            "- or use --device cpu.")


def device_name(name: str) -> str:
    """``name`` if it names a device PruneScope runs on (``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:N``): the CLI's check."""
    kind, _, index = name.partition(":")
    if name in ("auto", "cpu", "mps", "cuda") or (kind == "cuda" and index.isdigit()):
        return name
    raise ValueError(f"unknown device {name!r}: use auto, cpu, mps, cuda or cuda:N")


def device_choices() -> list[str]:
    """The devices a page offers: auto, the CPU, every visible GPU, and MPS where there is one."""
    choices = ["auto", "cpu", "cuda"]
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        choices.append("mps")
    return choices


class DeviceUnavailable(ValueError, RuntimeError):
    """A ``--device`` this machine cannot run: bad input (the CLI's one line and exit 2), still a RuntimeError
    for callers written before it had its own type."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA GPU 0, else Apple's MPS, else the CPU; ``cuda:N`` picks GPU N.

    Asking for a device that is not here, or a GPU this torch build has no kernels for, is one clear error.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"--device {name} was requested but no CUDA GPU is visible; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailable(f"--device {name} was requested but only {count} CUDA GPU(s) are visible (cuda:0"
                               f"{f'..cuda:{count - 1}' if count > 1 else ''})")
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = tuple(torch.cuda.get_device_capability(index))
        if missing_kernels(capability, torch.cuda.get_arch_list()):
            raise DeviceUnavailable(kernels_message(torch.cuda.get_device_name(index), capability,
                                               torch.cuda.get_arch_list(), torch.__version__))
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"--device {name} was requested but Apple's MPS is not available here; use --device cpu")
    return device


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision :func:`decide` picks for ``device`` (see the module doc)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    return device_policy(device, precision).precision


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast at the resolved precision (convolutions and matmuls); plain fp32 otherwise."""
    resolved = resolve_precision(device, precision)
    if resolved != "fp32":
        return torch.autocast(device.type, dtype=DTYPES[resolved])
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- process-wide state


_GLOBAL_STATE = threading.RLock()
"""Held while a seeded run owns torch's process-wide state (the global RNG, cuDNN and determinism flags),
so two sessions of the app training at once cannot interleave their seeding or restore each other's flags."""


@dataclass(frozen=True)
class DeterminismFlags:
    """torch's process-wide determinism switches, saved and restored exactly."""

    cudnn_benchmark: bool
    cudnn_deterministic: bool
    deterministic_algorithms: bool
    warn_only: bool

    @classmethod
    def current(cls) -> "DeterminismFlags":
        return cls(torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                   torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())

    def apply(self) -> None:
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.use_deterministic_algorithms(self.deterministic_algorithms, warn_only=self.warn_only)


@contextlib.contextmanager
def determinism(device: torch.device, deterministic: bool):
    """The flags one run on ``device`` wants, with the caller's flags restored exactly afterwards.

    On CUDA a fast run autotunes cuDNN; a deterministic one turns autotuning off, asks for deterministic
    kernels (warn-only: an op without one warns rather than crashes) and sets ``CUBLAS_WORKSPACE_CONFIG``,
    without which cuBLAS matmuls are not reproducible (it is read when cuBLAS starts, so it stays set).
    Elsewhere the flags are left as the caller set them.
    """
    with _GLOBAL_STATE:
        saved = DeterminismFlags.current()
        try:
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = not deterministic
                torch.backends.cudnn.deterministic = deterministic
                if deterministic:
                    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                    torch.use_deterministic_algorithms(True, warn_only=True)
            yield
        finally:
            saved.apply()


SMALL_OP_CPU_THREADS = 1
"""torch CPU threads for training loops whose steps are many small ops (the CLIP adapter, probes on
embeddings): each op is tens of microseconds of work, less than a barrier between OpenMP threads costs
when other processes (or the app's background UMAP) hold the cores, so a second thread makes them
10x slower there and saves at most ~15 % on an idle machine (docs/benchmarks.md)."""


@contextlib.contextmanager
def cpu_threads_for(n: Optional[int], dev: torch.device) -> Iterator[None]:
    """torch's CPU thread count set to ``n`` for a block on the CPU, then restored (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None and dev.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- CPU threads on a shared machine


@dataclass(frozen=True)
class ThreadChoice:
    """torch/OpenMP threads for one CPU step, and why: made by :func:`choose_threads` from what the machine reports."""

    threads: int
    cpus: int
    """CPUs in this process's affinity."""
    others_load: float
    """CPUs other processes keep busy (:class:`LoadMonitor`)."""
    cap: int
    """The most threads the caller allows (torch's thread count when the step began: ``OMP_NUM_THREADS``,
    ``torch.set_num_threads``); the policy only ever lowers it."""

    def describe(self) -> str:
        free = max(0.0, self.cpus - self.others_load)
        why = (f"{self.cpus} CPUs, other processes' load {self.others_load:.1f} leaves {free:.1f} free"
               + (f", capped at {self.cap} by the thread setting" if self.threads == self.cap < self.cpus else ""))
        return f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} ({why})"


def choose_threads(cpus: int, others_load: float, cap: int) -> ThreadChoice:
    """Threads for a CPU step: the cores other processes leave free, rounded half up, at least 1, at most ``cap``.

    A pure function of what :func:`thread_policy` reads, so it is tested with made-up machines.  Why not
    all cores: a multi-threaded op ends at an OpenMP barrier, and when another process holds one of the
    cores, every barrier waits for the thread parked behind it; one thread per *free* core never waits
    (docs/benchmarks.md, issue 27: ``bench/bench_threads.py``).
    """
    cpus, cap = max(1, int(cpus)), max(1, int(cap))
    free = cpus - max(0.0, float(others_load))
    threads = max(1, min(cap, cpus, int(free + 0.5)))
    return ThreadChoice(threads, cpus, max(0.0, float(others_load)), cap)


LOAD_WINDOW_S = 0.5
"""The shortest window over which the CPU time of others is measured (shorter ones keep the last reading)."""


class LoadMonitor:
    """How many of this process's CPUs other processes keep busy: the thread policy's input.

    Read from ``/proc/stat``'s per-CPU counters for the CPUs in this process's affinity, over the window
    since the previous reading, less this process's own CPU time in it: it follows a competing job within
    one window, where the 1-minute load average lags a minute behind and counts this process's own threads.
    Where ``/proc/stat`` is missing (macOS) the load average is used.  The first reading samples a short
    window.
    """

    def __init__(self) -> None:
        self._last: Optional[tuple[float, float, float]] = None
        self._others: Optional[float] = None
        self._lock = threading.Lock()

    def others_load(self) -> float:
        with self._lock:
            if self._last is None and self._reading() is not None:
                self._last = self._reading()
                time.sleep(LOAD_WINDOW_S)
            now = self._reading()
            if now is None:
                return load_average()
            then = self._last
            if now[0] - then[0] >= LOAD_WINDOW_S:
                self._others = max(0.0, ((now[1] - then[1]) - (now[2] - then[2])) / (now[0] - then[0]))
                self._last = now
            return self._others if self._others is not None else load_average()

    @staticmethod
    def _reading() -> Optional[tuple[float, float, float]]:
        busy = _affinity_busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _process_cpu_seconds())


MONITOR = LoadMonitor()
"""One per process: every step's thread choice and the planner read the same windows."""


class ThreadPolicy:
    """Chooses a CPU step's threads from the cores free now (:data:`MONITOR`); re-checked between epochs (:meth:`apply`)."""

    def __init__(self, cap: Optional[int] = None, monitor: Optional[LoadMonitor] = None) -> None:
        self.cap = int(cap if cap is not None else torch.get_num_threads())
        self.monitor = monitor or MONITOR
        self.choice = self.check()

    def check(self) -> ThreadChoice:
        return choose_threads(affinity_cpus(), self.monitor.others_load(), self.cap)

    def apply(self) -> ThreadChoice:
        """Check again and set torch's thread count to the choice (call it between epochs)."""
        self.choice = self.check()
        if torch.get_num_threads() != self.choice.threads:
            torch.set_num_threads(self.choice.threads)
        return self.choice


def _affinity_busy_seconds(stat: str = "/proc/stat") -> Optional[float]:
    """CPU-seconds the CPUs of this process's affinity have been busy (all processes), or None without /proc."""
    try:
        lines = Path(stat).read_text().splitlines()
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except (OSError, AttributeError):
        return None
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in mine:  # user nice system idle iowait irq softirq steal ...
            values = [int(v) for v in fields[1:9]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The 1-minute load average (runnable threads, all processes); 0 where the system has none (Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system

