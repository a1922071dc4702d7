"""Work the app does off the script thread, once per server process: numba's warm-up and UMAP fits.

Why: umap-learn compiles its numba kernels on first use (about 20 s on 2 cores) and a UMAP of
the demo takes seconds more, so a page that computed them inline showed "UMAP: 0 / 1" for up to
a minute.  One worker thread (so it never takes both cores from the page) starts warming numba
when the app starts and then fits whatever UMAP a page asks for; the page draws a PCA preview
meanwhile and swaps in the UMAP when its future is done.  Jobs are keyed, so every session and
rerun asking for the same map shares one fit.
"""

from __future__ import annotations

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


@st.cache_resource(show_spinner=False)
def _worker() -> tuple[ThreadPoolExecutor, dict[str, Future], threading.Lock]:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunescope-background"), {}, threading.Lock()


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
