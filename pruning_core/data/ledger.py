"""Which image files decoded when a dataset was last validated, so loading it again decodes only what changed.

Validation decodes every image (:func:`pruning_core.data.images.check_image`): 4.7 s for CIFAR-10's 50,000
small JPEGs on 2 cores, minutes for a million photos, paid again by every ``prunescope score`` and every app
start.  A file whose size and modification time (ns) are what they were when it decoded is not decoded again:
the same trust the dataset fingerprint puts in them (a file rewritten in place with its old size and mtime
restored is the case neither notices).  Only files that passed are recorded; a failing file is checked every
time, so a repaired one is seen.

One ledger per dataset root (its real path, hashed) in the result store's folder, written atomically (a
damaged ledger is read as empty, and every file is decoded again); :data:`LEDGER_VERSION` is raised when the
check itself changes, so files are checked again under the new rules.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from cache.store import atomic_write_bytes

log = logging.getLogger(__name__)

LEDGER_VERSION = 1
LEDGER_FOLDER = "checked"
"""Under the result store's root."""


class CheckLedger:
    """The files of one dataset root that decoded, by absolute path: ``(size, mtime_ns)`` when they did."""

    def __init__(self, path: Path, known: dict[str, tuple[int, int]]) -> None:
        self.path, self.known = path, known

    @classmethod
    def open(cls, folder: os.PathLike | str, dataset_root: str) -> "CheckLedger":
        """The ledger of ``dataset_root`` (a real path) kept in ``folder``; empty when missing or unreadable."""
        name = hashlib.blake2b(dataset_root.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
        path = Path(folder) / f"{name}-v{LEDGER_VERSION}.parquet"
        try:
            frame = pd.read_parquet(path)
            known = dict(zip(frame["path"], zip(frame["size"].tolist(), frame["mtime_ns"].tolist())))
        except Exception:  # noqa: BLE001 - missing or damaged: a full check, never a wrong answer
            known = {}
        return cls(path, known)

    def decoded(self, path: str, size: int, mtime_ns: int) -> bool:
        """True when ``path`` decoded before at exactly this size and mtime."""
        return self.known.get(path) == (size, mtime_ns)

    def record(self, paths: Sequence[str], sizes: np.ndarray, mtimes: np.ndarray) -> None:
        """Add files that just decoded and write the ledger (atomically; kept entries of other files stay)."""
        new = dict(zip(paths, zip(np.asarray(sizes).tolist(), np.asarray(mtimes).tolist())))
        if all(self.known.get(p) == v for p, v in new.items()):
            return
        self.known.update(new)
        frame = pd.DataFrame([(p, s, m) for p, (s, m) in self.known.items()], columns=["path", "size", "mtime_ns"])
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        try:
            atomic_write_bytes(self.path, buffer.getvalue())
        except OSError as exc:  # a full disk or a read-only store: the next load decodes again, nothing is lost
            log.warning("could not write the validation ledger %s (%s): the next load decodes every image again",
                        self.path, exc.strerror or exc)


def open_ledger(folder: Optional[os.PathLike | str], dataset_root: str) -> Optional[CheckLedger]:
    """:meth:`CheckLedger.open`, or None without a folder (every file is decoded)."""
    return None if folder is None else CheckLedger.open(folder, dataset_root)
