"""Content-addressed result store: every expensive result is saved once, keyed by what made it.

A key hashes the dataset fingerprint, the step name, the step's parameters and the
code version, so a result is found again whenever the same inputs come back (a reopened
app, a slider moved back) and never reused when any of them changed.  Each entry is a
directory of columnar files (``.npy`` arrays, ``.parquet`` tables) plus ``meta.json``;
it appears by one atomic ``rename`` of a finished temporary directory, so a crash or a
cancelled job never leaves a half-written entry that looks complete.  Long jobs keep
resumable chunks in a ``partial`` directory beside the entries.

A disk can still damage a finished file (a full disk during a copy, a crash of the machine, a
user's stray edit), so every entry records each file's size and SHA-256 in ``meta.json``.
:meth:`ResultStore.load` checks the sizes (one ``stat`` per file), :meth:`ResultStore.verify`
the checksums; a damaged entry or chunk is moved to ``quarantine/`` (kept for inspection,
logged with its path) and reported as missing, so the step that made it simply runs again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np
import pandas as pd

CODE_VERSION = "2"
"""Bumped when a change alters results, so older cache entries stop matching."""

_META = "meta.json"
_FILES = "files"
"""meta.json's record of each artifact: ``{file name: {"bytes": size, "sha256": digest}}``."""
QUARANTINE = "quarantine"
"""Where damaged entries and chunks are moved, under the store root."""

log = logging.getLogger("prunescope.cache")


class CacheEntryDamaged(ValueError):
    """A cache entry that failed to load after it was found; it was moved aside, so a rerun recomputes it."""


class WriteFailed(OSError):
    """A write that failed, in one line naming the file and the cause (``errno`` kept: ENOSPC for a full disk)."""


_FULL = {errno.ENOSPC: "the disk is full (no space left on its device)",
         errno.EDQUOT: "the disk quota is exhausted"}


@contextmanager
def writing(path: Path, what: str = "") -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a :class:`WriteFailed` naming it and the cause.

    numpy reports a short write to a full disk as a bare ``"153600 requested and 98176 written"``
    without an errno; that is a full disk (or quota) too.  The callers remove their temporary
    files, so nothing half-written is left where a reader would find it.
    """
    try:
        yield
    except WriteFailed:
        raise
    except OSError as exc:
        text = str(exc)
        short_write = exc.errno is None and "requested and" in text and "written" in text
        cause = _FULL.get(exc.errno) or (_FULL[errno.ENOSPC] if short_write else exc.strerror or text)
        hint = "; free space or choose another folder" if exc.errno in _FULL or short_write else ""
        failed = WriteFailed(f"cannot write {what + ' ' if what else ''}{path}: {cause}{hint}")
        failed.errno = errno.ENOSPC if short_write else exc.errno
        raise failed from exc


def _store_root(path: Path) -> Optional[Path]:
    """The store directory holding ``path`` (the parent of its ``entries/`` or ``partial/`` folder)."""
    for parent in Path(path).parents:
        if parent.name in ("entries", "partial"):
            return parent.parent
    return None


def quarantine(path: Path, reason: str) -> Optional[Path]:
    """Move a damaged entry or chunk to the store's ``quarantine/`` folder and log where; returns the new path.

    Outside a store (a chunk folder of the caller's choosing) it goes to a ``.quarantine`` folder
    beside it.  Another process may have moved it first: then nothing happens.
    """
    path = Path(path)
    root = _store_root(path)
    folder = root / QUARANTINE if root is not None else path.parent / f".{QUARANTINE}"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{path.name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None
    log.warning("prunescope cache: %s is damaged (%s); moved to %s, it will be recomputed", path, reason, dest)
    return dest


def read_chunk(path: Path) -> Optional[np.ndarray]:
    """A resumable job's saved chunk, or None (quarantined) when it cannot be read: the job recomputes it."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (ValueError, OSError, EOFError) as exc:
        quarantine(path, f"unreadable chunk: {type(exc).__name__}: {exc}")
        return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (cache entries record it; manifests name their inputs by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_whole(path: Path) -> None:
    """Parse an artifact completely (entries written before sizes were recorded have nothing to compare)."""
    if path.suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif path.suffix == ".parquet":
        pd.read_parquet(path)


def _npy_complete(path: Path) -> None:
    """Raise unless the ``.npy`` header parses and the file holds all the data it declares (no data read)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{path.name}: unsupported .npy version {version}")
        shape, _fortran, dtype = read_header(fh)
        expected = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise ValueError(f"{path.name} is truncated")


def entry_problem(path: Path, *, deep: bool = False) -> Optional[str]:
    """Why the entry directory ``path`` cannot be used, or None when it is intact.

    Cheap by default: meta.json parses and each recorded file has its recorded size (entries of
    older versions: each ``.npy`` header is complete, each parquet footer readable).  ``deep``
    also compares SHA-256 digests (or parses every file completely).
    """
    meta_path = path / _META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"meta.json is unreadable ({exc})"
    if not isinstance(meta, dict):
        return "meta.json is not an object"
    files = meta.get(_FILES)
    try:
        if isinstance(files, dict):
            for name, record in files.items():
                size = os.path.getsize(path / name)
                if size != record["bytes"]:
                    return f"{name} has {size} bytes, {record['bytes']} were written"
                if deep and file_sha256(path / name) != record["sha256"]:
                    return f"{name} does not match its checksum"
        else:
            for artifact in path.iterdir():
                if deep:
                    _read_whole(artifact)
                elif artifact.suffix == ".npy":
                    _npy_complete(artifact)
                elif artifact.suffix == ".parquet":
                    import pyarrow.parquet as pq

                    pq.read_metadata(artifact)
    except FileNotFoundError as exc:
        return f"{Path(exc.filename).name if exc.filename else 'a file'} is missing"
    except Exception as exc:  # any parser error means the same thing here: this file is damaged
        return f"{type(exc).__name__}: {exc}"
    return None


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
        with writing(path), os.fdopen(fd, "wb") as fh:
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
        with writing(path), open(tmp, "wb") as fh:
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
        return self._read(f"{name}.npy", lambda p: np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False))

    def frame(self, name: str) -> pd.DataFrame:
        return self._read(f"{name}.parquet", pd.read_parquet)

    def _read(self, file_name: str, reader: Callable[[Path], Any]) -> Any:
        """``reader(file)``; damage the size check could not see moves the entry aside and says to rerun."""
        try:
            return reader(self.path / file_name)
        except FileNotFoundError:
            raise
        except Exception as exc:  # numpy and pyarrow raise many types for one cause: a damaged file
            where = quarantine(self.path, f"{file_name}: {type(exc).__name__}: {exc}")
            raise CacheEntryDamaged(f"cache entry {self.path} was damaged ({file_name} unreadable); moved to "
                                    f"{where}: rerun to recompute it") from None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.path.iterdir() if p.suffix in (".npy", ".parquet"))

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    chunks: int
    problems: list[str]


class ResultStore:
    """The persistent store under one directory; safe to share between the CLI and the app."""

    def __init__(self, root: Optional[Path | str] = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.entries_dir = self.root / "entries"
        self.partial_root = self.root / "partial"
        self.entries_dir.mkdir(parents=True, exist_ok=True)

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE

    def load(self, key: str) -> Optional[Entry]:
        """The finished entry, or None when there is none or it is damaged (then it is quarantined)."""
        path = self.entries_dir / key
        if not path.is_dir():
            return None
        problem = entry_problem(path)
        if problem is not None:
            quarantine(path, problem)
            return None
        return Entry(key, path, json.loads((path / _META).read_text()))

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
        final = self.entries_dir / key
        try:
            with writing(final, "cache entry"):
                tmp.mkdir(parents=True)
                for name, arr in (arrays or {}).items():
                    np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
                for name, df in (frames or {}).items():
                    df.to_parquet(tmp / f"{name}.parquet", index=False)
                files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())}
                full_meta = {"key": key, "created": time.time(), **(meta or {}), _FILES: files}
                (tmp / _META).write_text(json.dumps(full_meta, indent=1, default=str))
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

    def partial_dir(self, key: str) -> Path:
        """Where a long job keeps finished chunks until its entry is complete."""
        path = self.partial_root / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clear_partial(self, key: str) -> None:
        shutil.rmtree(self.partial_root / key, ignore_errors=True)

    def verify(self) -> "VerifyReport":
        """Check every entry against its checksums and every partial chunk by reading it; quarantine the damaged."""
        problems: list[str] = []
        checked = chunks = 0
        for path in sorted(self.entries_dir.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            checked += 1
            problem = entry_problem(path, deep=True)
            if problem is not None:
                problems.append(f"{path}: {problem} -> {quarantine(path, problem)}")
        if self.partial_root.is_dir():
            for chunk in sorted(self.partial_root.rglob("*.npy")):
                if chunk.name.startswith("."):
                    continue
                chunks += 1
                if read_chunk(chunk) is None:
                    problems.append(f"{chunk}: unreadable chunk")
        return VerifyReport(checked, chunks, problems)

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

    def clear(self, step: Optional[str] = None, *, keys: Optional[Iterable[str]] = None) -> int:
        """Delete all entries, or those of one ``step`` and/or with one of ``keys``; clearing everything also
        removes partial chunks and the quarantine.

        Returns how many entries were removed."""
        keys = None if keys is None else set(keys)
        removed = 0
        for entry in self.ls():
            if (step is None or entry.meta.get("step") == step) and (keys is None or entry.key in keys):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        if step is None and keys is None:
            shutil.rmtree(self.partial_root, ignore_errors=True)
            shutil.rmtree(self.quarantine_dir, ignore_errors=True)
            for tmp in self.entries_dir.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
        return removed
