"""Work the app does off the script thread, once per server process: numba's warm-up and UMAP fits.

Why: umap-learn compiles its numba kernels on first use (about 20 s on 2 cores) and a UMAP of
the demo takes seconds more, so a page that computed them inline showed "UMAP: 0 / 1" for up to
a minute.  One worker thread at a low priority (so the page's own work comes first) starts warming numba
when the app starts and then fits whatever UMAP a page asks for; the page draws a PCA preview
meanwhile and swaps in the UMAP when its future is done.  Jobs are keyed, so every session and
rerun asking for the same map shares one fit.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
import streamlit as st

from cache.store import ResultStore
from pruning_core.data.datasets import Dataset
from pruning_core.scoring.pipeline import ClipConfig, ClipEmbeddings, clip_embeddings
from pruning_core.audit.projection import cached_umap, umap_step, warm_umap

WARM = "warm-umap"


BACKGROUND_NICE = 10
"""The background thread's nice value (and so its numba threads', which inherit it): while a page probes or trains,
the scheduler gives the page's threads the core first (~90 % of it against one nice-10 thread).  At normal priority
the numba warm-up that starts with the app took the core the Score page's throughput probe ran on, and the thread
policy cannot see it (it counts other processes): the probe read 517 samples/s where the CLI reads 1,167, and the
page's first plan was a third too long (docs/benchmarks.md, "The Score page's plan against its wall time").  Not 19:
there a UMAP fit would get ~1.5 % of a core other users' jobs keep busy; at 10 it gets ~10 %."""


def _lower_priority() -> None:
    """Make the calling thread (the background worker) yield to the page's work: per-thread nice on Linux."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):  # no per-thread priorities here (macOS, Windows): it runs as before
        pass


@st.cache_resource(show_spinner=False)
def _worker() -> tuple[ThreadPoolExecutor, dict[str, Future], threading.Lock]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunescope-background", initializer=_lower_priority)
    return executor, {}, threading.Lock()


def submit(key: str, fn: Callable[[], object]) -> Future:
    """Run ``fn`` on the background thread unless a job with ``key`` is queued, running or done well."""
    executor, jobs, lock = _worker()
    with lock:
        job = jobs.get(key)
        if job is None or (job.done() and job.exception() is not None):
            job = jobs[key] = executor.submit(fn)
        return job


def warm_at_start() -> Future:
    """Compile umap-learn's kernels now, so the first map a user asks for does not wait on numba."""
    return submit(WARM, warm_umap)


def clip_umap_or_start(dataset: Dataset, config: ClipConfig, store: ResultStore
                       ) -> tuple[ClipEmbeddings, Optional[np.ndarray], Optional[Future]]:
    """The CLIP image embeddings and their cached UMAP, or ``None`` and the future of the fit that will cache it."""
    embeddings = clip_embeddings(dataset, config, store)
    coords, job = umap_or_start(lambda: embeddings.image, store, fingerprint=dataset.fingerprint,
                                source={"embedding": "clip-image", **embeddings.identity})
    return embeddings, coords, job


def umap_or_start(load: Callable[[], np.ndarray], store: ResultStore, *, fingerprint: str, source: dict
                  ) -> tuple[Optional[np.ndarray], Optional[Future]]:
    """The cached UMAP coordinates, or ``(None, future)`` of the background fit that will cache them.

    ``load`` gives the embeddings; it is called only when the UMAP is not cached yet (reading
    200,000 x 512 CLIP embeddings costs more than the rest of a map rerun).
    """
    step = umap_step(fingerprint, source)
    entry = step.load(store)
    if entry is not None:
        return entry.array("coords"), None
    job = submit(step.key, lambda: cached_umap(load(), store, fingerprint=fingerprint, source=source))
    return None, job
