"""Progress reporting and cancellation shared by every long job.

Long jobs (embedding, proxy training, UMAP) take a ``progress`` callback and a
``cancel`` token instead of printing or polling a UI.  The Streamlit pages turn
the callback into a progress bar, the CLI into tqdm bars, tests into a list.
Jobs save their work in chunks, so a cancelled job resumes where it stopped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressCallback = Callable[[Progress], None]


class Cancelled(RuntimeError):
    """Raised inside a job when its cancel token was set; partial work stays saved."""


class CancelToken:
    """Thread-safe flag a UI or signal handler sets to stop a running job."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("job cancelled; finished chunks are kept and the next run resumes")


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: int, message: str = "") -> None:
    """Call ``callback`` if there is one; jobs use this so the callback stays optional."""
    if callback is not None:
        callback(Progress(stage, done, total, message))


def check(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set; a no-op without a token."""
    if cancel is not None:
        cancel.raise_if_cancelled()


class TqdmProgress:
    """A ``ProgressCallback`` that draws one tqdm bar per stage (the CLI's view)."""

    def __init__(self) -> None:
        self._bars: dict[str, object] = {}

    def __call__(self, p: Progress) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(p.stage)
        if bar is None:
            bar = tqdm(total=p.total, desc=p.stage, unit="it", leave=True)
            self._bars[p.stage] = bar
        bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()
        if p.done >= p.total:
            bar.close()
            self._bars.pop(p.stage, None)
