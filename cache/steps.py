"""One cached step: every expensive result is looked up, computed and saved through :class:`CachedStep`.

A step is named by what makes its result (step name, dataset fingerprint, parameters), so the
same object answers every question about it: its key, whether the store holds it, where its
resumable chunks go, what its entry records, and what a cancelled run left of it.  Computing
functions and :func:`pruning_core.scoring.pipeline.kept_work` build their steps with the same function,
so the key a job writes is the key the cancel message reads, never a second copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import pandas as pd

from cache.store import Entry, ResultStore, make_key


@dataclass(frozen=True)
class Computed:
    """What a step's ``compute`` returns: the entry's arrays and tables, and facts to record in its meta."""

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    frames: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


ChunkReport = Callable[[Path], Optional[str]]
"""Reads a resumable step's partial folder and says what is done there (``"2 of 5 ... chunks"``), or None."""


@dataclass(frozen=True)
class CachedStep:
    """One cacheable computation on one input: load it, or compute and save it atomically.

    Its entry's meta always holds ``step``, ``fingerprint``, ``params`` (and ``dataset`` when named)
    plus what ``compute`` adds, so cache listings and ``ResultStore.clear(step)`` read the same fields
    for every step.  A damaged entry loads as None (the store quarantines it), so it is recomputed.
    """

    step: str
    fingerprint: str
    params: Mapping[str, Any]
    dataset: Optional[str] = None
    """The dataset's name, shown in cache listings (the fingerprint is what keys the entry)."""
    label: Optional[str] = None
    """What a cancel message calls the finished entry ("the image embeddings"); None: not worth reporting."""
    chunks: Optional[ChunkReport] = None
    """For resumable steps: what the partial folder holds, reported while the entry is unfinished."""

    @cached_property
    def key(self) -> str:
        return make_key(self.step, self.fingerprint, self.params)

    def load(self, store: ResultStore) -> Optional[Entry]:
        """The finished entry, or None when missing or damaged (then quarantined)."""
        return store.load(self.key)

    def is_cached(self, store: ResultStore) -> bool:
        return self.load(store) is not None

    def partial_dir(self, store: ResultStore) -> Path:
        """Where the step's ``compute`` keeps finished chunks; cleared when its entry is saved."""
        return store.partial_dir(self.key)

    def meta(self) -> dict[str, Any]:
        """What every entry of this step records about how it was made."""
        named = {"dataset": self.dataset} if self.dataset is not None else {}
        return {"step": self.step, **named, "fingerprint": self.fingerprint, "params": dict(self.params)}

    def run(self, store: ResultStore, compute: Callable[[], Computed], *,
            reuse: Optional[Callable[[Entry], bool]] = None) -> Entry:
        """The cached entry, or ``compute()`` saved as one (atomically; the partial chunks are then dropped).

        ``reuse(entry)`` False says a loaded entry is out of date (a measurement of a machine that has
        changed since): it is dropped and computed again.
        """
        entry = self.load(store)
        if entry is not None and (reuse is None or reuse(entry)):
            return entry
        if entry is not None:
            self.forget(store)
        result = compute()
        return store.save(self.key, arrays=result.arrays, frames=result.frames, meta={**self.meta(), **result.meta})

    def forget(self, store: ResultStore) -> None:
        """Drop the finished entry (the next :meth:`run` computes it again)."""
        store.clear(keys=[self.key])

    def kept(self, store: ResultStore) -> Optional[str]:
        """What the store holds of this step's work after an interrupted run, in words; None for nothing."""
        if self.label is not None and self.is_cached(store):
            return self.label
        if self.chunks is not None:
            partial = store.partial_root / self.key
            return self.chunks(partial) if partial.is_dir() else None
        return None
