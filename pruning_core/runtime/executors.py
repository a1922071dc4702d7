"""Where independent work items run: in this process, or as Ray tasks on a cluster.

Cross-fitting folds, Evaluate grid cells and image-embedding batches are independent of each
other, so the library hands them to an *executor* instead of looping itself.  The executor only
places work: what runs (the fold function, the embedding loop and the CLIP actor factory) comes from
the step that owns it, so this ground-floor module imports nothing above it.  The local executor
is the plain loop (same order, same progress, same results as before executors existed); the Ray
executor submits every item as a Ray task with its CPU/GPU needs and calls back on the driver as
each one finishes, so a finished fold or run is saved at once and a cancel keeps it.

The executor in use is a context variable (:func:`using`), set once by the CLI or a page around a
whole job: where work runs never changes a result, so it is no part of any config or cache key.
Ray is imported only inside :class:`RayExecutor`, so the local path never loads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence

from pruning_core.runtime.progress import CancelToken, ProgressCallback, check

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Needs:
    """What one work item needs from the worker that runs it (ignored by the local executor)."""

    cpus: float = 1.0
    gpus: Optional[float] = None
    """GPUs per item; None = one GPU when the cluster has any, else none (what device 'auto' means)."""

    @classmethod
    def for_device(cls, device: str, cpus: float = 1.0) -> "Needs":
        """The needs of a training item asked to run on ``device`` ('auto', 'cpu', 'mps', 'cuda' or 'cuda:N')."""
        name = str(device)
        gpus = None if name == "auto" else 1.0 if name.startswith("cuda") else 0.0  # MPS is no Ray GPU
        return cls(cpus=cpus, gpus=gpus)


ItemFn = Callable[..., Any]
"""``fn(item, progress=..., cancel=..., **common)`` -> the item's result (module-level, so Ray can ship it)."""

LocalBatches = Callable[[Sequence[Any]], Iterator[Mapping[str, Any]]]
"""A step's in-process batched loop over its items (e.g. DataLoader workers decoding while a model runs)."""

ActorFactory = Callable[[], Callable[[list], Mapping[str, Any]]]
"""Called once inside each pool worker (so a model loads once per worker); returns ``fn(batch of items) -> arrays``.
A module-level function or a ``functools.partial`` of one, so Ray can ship it."""


class Executor(Protocol):
    name: str

    def map(self, fn: ItemFn, items: Sequence[Any], *, common: Mapping[str, Any], needs: Needs = Needs(),
            on_start: Optional[Callable[[int], Optional[ProgressCallback]]] = None,
            on_done: Optional[Callable[[int, Any], None]] = None,
            cancel: Optional[CancelToken] = None) -> list[Any]:
        """Results of ``fn`` over ``items`` in item order; ``on_done(i, result)`` runs here as each ends."""

    def map_batches(self, items: Sequence[Any], *, batch_size: int, local: LocalBatches,
                    actor: ActorFactory) -> Iterator[Mapping[str, Any]]:
        """Results of consecutive batches of ``items``, in order, as dicts of arrays.

        ``local(items)`` is the step's own in-process loop (the local executor runs it); ``actor()``
        is called once in each worker of a pool and returns the function that maps one batch of
        items to a dict of equal-length arrays.  The step that owns the work provides both, so the
        runtime never imports what it runs.
        """


class LocalExecutor:
    """Items one after another in this process: the default, and the reference for every result."""

    name = "local"

    def map(self, fn, items, *, common, needs=Needs(), on_start=None, on_done=None, cancel=None):
        results = []
        for i, item in enumerate(items):
            check(cancel)
            progress = on_start(i) if on_start is not None else None
            results.append(fn(item, progress=progress, cancel=cancel, **common))
            if on_done is not None:
                on_done(i, results[-1])
        return results

    def map_batches(self, items, *, batch_size, local, actor):
        return local(items)


class RayExecutor:
    """Items as Ray tasks (retried when a worker dies), embeddings as a Ray Data actor pool.

    ``address`` is what ``ray.init`` takes: None starts (or joins, with ``$RAY_ADDRESS``) a cluster
    on this machine, ``"auto"`` joins the one ``ray start`` runs here, ``"ray://host:10001"`` a remote one.
    Inputs shared by all items (the images, the score table) go into the object store once.
    """

    name = "ray"
    POLL_S = 0.25
    """How often a running map looks at the cancel token (seconds)."""

    def __init__(self, address: Optional[str] = None, max_retries: int = 3, **init_kw: Any) -> None:
        self.address = address
        self.max_retries = max_retries
        self.init_kw = {"include_dashboard": False, "log_to_driver": False, **init_kw}

    def _ray(self):
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kw)
        return ray

    def _gpus(self, needs: Needs) -> float:
        if needs.gpus is not None:
            return needs.gpus
        return 1.0 if self._ray().cluster_resources().get("GPU", 0) >= 1 else 0.0

    def map(self, fn, items, *, common, needs=Needs(), on_start=None, on_done=None, cancel=None):
        ray = self._ray()
        task = ray.remote(fn).options(num_cpus=needs.cpus, num_gpus=self._gpus(needs),
                                      max_retries=self.max_retries, name=fn.__name__)
        shared = {name: ray.put(value) for name, value in common.items()}
        index = {task.remote(item, progress=None, cancel=None, **shared): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        pending = list(index)
        try:
            while pending:
                check(cancel)
                done, pending = ray.wait(pending, num_returns=1, timeout=self.POLL_S)
                for ref in done:
                    i = index[ref]
                    results[i] = ray.get(ref)
                    if on_done is not None:
                        on_done(i, results[i])
        except BaseException:
            for ref in pending:  # a cancel, Ctrl-C or a failed item: stop the rest, keep what was saved
                ray.cancel(ref, force=True)
            raise
        return results

    def map_batches(self, items, *, batch_size, local, actor):
        """Batches on a Ray Data actor pool: one actor per GPU, else one per CPU (the work decodes in the actor)."""
        ray = self._ray()
        gpus = ray.cluster_resources().get("GPU", 0)
        pool = int(gpus) if gpus >= 1 else max(1, int(ray.cluster_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come back in item order, as locally
        # a few blocks per actor: enough to balance the pool, few enough that per-block scheduling stays cheap
        rows = ray.data.from_items([{"i": i, "item": item} for i, item in enumerate(items)],
                                   override_num_blocks=max(1, min(4 * pool, -(-len(items) // batch_size))))
        mapped = rows.map_batches(
            _BatchActor, fn_constructor_kwargs={"factory": actor}, batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=pool), num_gpus=1 if gpus >= 1 else 0, num_cpus=1,
        )
        expected = 0
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            order = batch.pop("i")
            if order.size and order[0] != expected:
                raise RuntimeError(f"Ray Data returned rows out of order (row {order[0]}, expected {expected})")
            expected += order.size
            yield batch


class _BatchActor:
    """One pool worker: builds the step's batch function once (its model, on its GPU when it has one)."""

    def __init__(self, factory: ActorFactory) -> None:
        self.fn = factory()

    def __call__(self, batch: dict) -> dict:
        return {"i": batch["i"], **self.fn(list(batch["item"]))}


LOCAL = LocalExecutor()
_CURRENT: ContextVar[Executor] = ContextVar("prunescope_executor", default=LOCAL)


def current() -> Executor:
    """The executor of the job in progress (local unless a caller chose another with :func:`using`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(executor: Executor) -> Iterator[Executor]:
    """Run the enclosed job's independent items on ``executor``."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def make_executor(name: str = "local", address: Optional[str] = None) -> Executor:
    """The executor the CLI's ``--executor``/``--ray-address`` or a page's choice names."""
    if name == "local":
        if address:
            raise ValueError("--ray-address needs --executor ray")
        return LOCAL
    if name == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


def ray_cluster_reachable() -> bool:
    """Whether a Ray cluster was started here (``ray start``) or named by ``$RAY_ADDRESS``, without importing Ray."""
    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").is_file()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (an advisory ``flock``) while one worker computes what it guards.

    Two grid cells with the same inputs may run at once on a cluster; the second waits here, then
    finds the first one's cache entry instead of training it again or writing the entry beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
