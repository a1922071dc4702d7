"""Content-addressed result store: every expensive result is saved once, keyed by what made it.

A key hashes the dataset fingerprint, the step name, the step's parameters and the
code version, so a result is found again whenever the same inputs come back (a reopened
app, a slider moved back) and never reused when any of them changed.  Each entry is a
directory of columnar files (``.npy`` arrays, ``.parquet`` tables) plus ``meta.json``;
it appears by one atomic ``rename`` of a finished temporary directory, so a crash or a
cancelled job never leaves a half-written entry that looks complete.  Long jobs keep
resumable chunks in a ``partial`` directory beside the entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import pandas as pd

CODE_VERSION = "2"
"""Bumped when a change alters results, so older cache entries stop matching."""

_META = "meta.json"


def default_cache_dir() -> Path:
    """``$PRUNESCOPE_CACHE`` or ``~/.cache/prunescope``: one place shared by CLI and app."""
    env = os.environ.get("PRUNESCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunescope"


def make_key(step: str, fingerprint: str, params: Mapping[str, Any]) -> str:
    """A stable hex key for (step, dataset fingerprint, parameters, code version)."""
    payload = json.dumps(
        {"step": step, "fingerprint": fingerprint, "params": params, "code": CODE_VERSION},
        sort_keys=True,
        default=str,
    )
    return f"{step}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Entry:
    """A finished cache entry: read its arrays and tables by name."""

    key: str
    path: Path
    meta: dict

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)

    def frame(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.path / f"{name}.parquet")

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.path.iterdir() if p.suffix in (".npy", ".parquet"))

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


class ResultStore:
    """The persistent store under one directory; safe to share between the CLI and the app."""

    def __init__(self, root: Optional[Path | str] = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.entries_dir = self.root / "entries"
        self.partial_root = self.root / "partial"
        self.entries_dir.mkdir(parents=True, exist_ok=True)

    def load(self, key: str) -> Optional[Entry]:
        path = self.entries_dir / key
        meta_path = path / _META
        if not meta_path.is_file():
            return None
        return Entry(key, path, json.loads(meta_path.read_text()))

    def save(
        self,
        key: str,
        *,
        arrays: Optional[Mapping[str, np.ndarray]] = None,
        frames: Optional[Mapping[str, pd.DataFrame]] = None,
        meta: Optional[Mapping[str, Any]] = None,
    ) -> Entry:
        """Write all artifacts into a temporary directory, then rename it into place."""
        tmp = self.entries_dir / f".tmp-{key}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            for name, arr in (arrays or {}).items():
                np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
            for name, df in (frames or {}).items():
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            full_meta = {"key": key, "created": time.time(), **(meta or {})}
            (tmp / _META).write_text(json.dumps(full_meta, indent=1, default=str))
            final = self.entries_dir / key
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process finished the same key first; its result is equivalent.
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.clear_partial(key)
        entry = self.load(key)
        assert entry is not None
        return entry

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, pd.DataFrame]]],
        meta: Optional[Mapping[str, Any]] = None,
    ) -> Entry:
        """Return the entry for ``key``, computing and saving it only when it is missing."""
        entry = self.load(key)
        if entry is not None:
            return entry
        arrays, frames = compute()
        return self.save(key, arrays=arrays, frames=frames, meta=meta)

    def partial_dir(self, key: str) -> Path:
        """Where a long job keeps finished chunks until its entry is complete."""
        path = self.partial_root / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clear_partial(self, key: str) -> None:
        shutil.rmtree(self.partial_root / key, ignore_errors=True)

    def ls(self) -> list[Entry]:
        """Every finished entry, newest first: the index the CLI and the app list."""
        entries = []
        for path in self.entries_dir.iterdir():
            if path.name.startswith("."):
                continue
            entry = self.load(path.name)
            if entry is not None:
                entries.append(entry)
        return sorted(entries, key=lambda e: e.meta.get("created", 0), reverse=True)

    def clear(self, step: Optional[str] = None) -> int:
        """Delete all entries (or those of one step) and stale partial chunks; return how many."""
        removed = 0
        for entry in self.ls():
            if step is None or entry.meta.get("step") == step:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        if step is None:
            shutil.rmtree(self.partial_root, ignore_errors=True)
            for tmp in self.entries_dir.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
        return removed
