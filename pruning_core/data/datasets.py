"""Datasets: load an image folder or a CSV / parquet manifest, validate it, fingerprint it.

Everything downstream (embeddings, scores, caches) indexes rows of ``Dataset.samples``,
so loading does all validation up front, before any heavy work: every bad row is
*skipped with a recorded reason* (an :class:`Issue`) instead of crashing a job an hour
later.  Only problems that leave nothing to load (manifest unreadable, required columns
missing, zero valid samples) raise :class:`DatasetError`.

Row numbers in issues are **1-based data row numbers**: the first row after the CSV
header is row 1 (in a spreadsheet that is line 2).  Image-folder issues have no row and
are identified by path.

Severity: ``"error"`` means the sample was skipped; ``"warning"`` means nothing was
dropped from the samples but the user should know (ignored files, empty classes, a
single class, empty captions).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat as stat_mod
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.data import images, readers
from pruning_core.data.ledger import CheckLedger, open_ledger
from pruning_core.data.readers.base import LoadedBlob, Scan
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check
from pruning_core.runtime.safety import check_dataset_root

Severity = Literal["error", "warning"]

REQUIRED_COLUMNS = ("path", "label")
MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FINGERPRINT_VERSION = "prunescope-dataset-v1"
CHECK_STAGE = "Checking files"

# Short kinds: the summary groups skipped samples by these.
KIND_MISSING = "missing file"
KIND_EMPTY_FILE = "empty file"
KIND_CORRUPT = "corrupt image"
KIND_NOT_IMAGE = "not an image"
KIND_UNREADABLE = "unreadable file"
KIND_DUPLICATE = "duplicate path"
KIND_DUPLICATE_KEY = "duplicate key"
KIND_EMPTY_IMAGE = "empty image"
KIND_EMPTY_LABEL = "empty label"
KIND_EMPTY_PATH = "empty path"
KIND_OUTSIDE = "outside root"
KIND_IGNORED = "ignored file"
KIND_EMPTY_CLASS = "empty class"
KIND_SINGLE_CLASS = "single class"
KIND_EMPTY_CAPTION = "empty caption"
KIND_TOO_LARGE = "image too large"
KIND_SINGLETON_CLASS = "single-sample class"
KIND_URL = "URL"
KIND_WINDOWS_PATH = "Windows path"

WALK_PATIENCE = 2000
"""Non-image files a folder walk meets before it checks that it is in a dataset at all."""
WALK_MIN_IMAGE_SHARE = 0.05
"""Below this share of image files (after ``WALK_PATIENCE`` others) the walk stops: not a dataset folder."""

_URL = r"^[A-Za-z][A-Za-z0-9+.-]*://"
_WINDOWS = r"^(?:[A-Za-z]:[\\/]|\\\\)"

_IMAGE_REASON_KIND = {
    images.REASON_EMPTY: KIND_EMPTY_FILE,
    images.REASON_NOT_IMAGE: KIND_NOT_IMAGE,
    images.REASON_CORRUPT: KIND_CORRUPT,
    images.REASON_MISSING: KIND_MISSING,
    images.REASON_TOO_LARGE: KIND_TOO_LARGE,
}

# pandas' default NA spellings; applied to extra columns only, so a class named "NA" or
# "None" stays a class name while extra columns are read exactly as pandas would.
_PANDAS_NA = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip


class DatasetError(ValueError):
    """Nothing usable could be loaded; the message says why and what was found."""


_PLURALS = {
    KIND_NOT_IMAGE: "not images",
    KIND_OUTSIDE: "outside root",
    KIND_IGNORED: "ignored files",
    KIND_EMPTY_CLASS: "empty classes",
    KIND_SINGLE_CLASS: "single class",
    KIND_EMPTY_CAPTION: "empty captions",
    KIND_TOO_LARGE: "images too large",
    KIND_SINGLETON_CLASS: "single-sample classes",
    KIND_WINDOWS_PATH: "Windows paths",
    readers.base.KIND_TRUNCATED: "truncated shards",
    readers.base.KIND_NO_IMAGE: "no image members",
    "valid sample": "valid samples",
    "warning": "warnings",
}


def _plural(n: int, word: str) -> str:
    """``1 missing file`` / ``2 missing files`` (irregular kinds listed in ``_PLURALS``)."""
    return f"{n:,} {word if n == 1 else _PLURALS.get(word, word + 's')}"


@dataclass
class Issue:
    """One problem found while loading; ``row`` is a 1-based data row (None in folders)."""

    row: Optional[int]
    path: Optional[str]
    reason: str
    severity: Severity
    kind: str = ""
    """Short category used to group issues in :meth:`ValidationReport.summary`."""


@dataclass
class ValidationReport:
    """Everything the loader skipped or warned about, in row order."""

    issues: list[Issue] = field(default_factory=list)
    n_valid: int = 0

    def as_frame(self) -> pd.DataFrame:
        """Columns ``row`` (nullable Int64), ``path``, ``reason``, ``severity``, ``kind``."""
        return pd.DataFrame(
            {
                "row": pd.array([i.row for i in self.issues], dtype="Int64"),
                "path": pd.Series([i.path for i in self.issues], dtype=object),
                "reason": pd.Series([i.reason for i in self.issues], dtype=object),
                "severity": pd.Series([i.severity for i in self.issues], dtype=object),
                "kind": pd.Series([i.kind for i in self.issues], dtype=object),
            }
        )

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def n_skipped(self) -> int:
        """Samples dropped: each skipped sample carries exactly one error issue."""
        return len(self.errors)

    def summary(self) -> str:
        """One line, e.g. ``49,998 valid samples; 2 skipped: 1 missing file, 1 corrupt image``."""
        text = _plural(self.n_valid, "valid sample")
        for head, group in ((f"{self.n_skipped:,} skipped", self.errors), (None, self.warnings)):
            if not group:
                continue
            counts = pd.Series([i.kind or i.reason for i in group]).value_counts(sort=False)
            parts = ", ".join(_plural(int(c), str(k)) for k, c in counts.items())
            text += f"; {head or _plural(len(group), 'warning')}: {parts}"
        return text

    def __str__(self) -> str:
        return self.summary()


ISSUE_COLUMNS = tuple(ValidationReport().as_frame().columns)
"""The columns of every issues table (``validate --out``, ``scores.issues.csv``)."""


def check_trainable(dataset: "Dataset", source: object, what: str) -> None:
    """Refuse, before any work, a dataset a proxy model cannot train on: it needs two classes or more."""
    if len(dataset.classes) < 2:
        raise DatasetError(f"{source}: only one class ({dataset.classes[0]!r}, {len(dataset):,} samples); {what} "
                           "train a classifier, which needs at least 2 classes")


@dataclass
class Dataset:
    """Valid samples of one dataset plus what was skipped and a fingerprint for caching."""

    name: str
    root: Path
    """Absolute, resolved folder that every ``samples.path`` is relative to."""
    samples: pd.DataFrame
    """Only valid samples, RangeIndex 0..N-1: ``path`` (relative POSIX str), ``label`` (str),
    optional ``caption`` (str), then the manifest's extra columns unchanged."""
    classes: list[str]
    """Sorted unique labels of the valid samples; ``label_ids`` index into it."""
    report: ValidationReport
    fingerprint: str
    """Hex digest of (relative path, size, mtime ns, label, caption) of every valid sample,
    in order: equal across processes for equal data, different after any file/label change.
    For images inside containers: (id, size, content digest of the bytes, label, caption)."""
    refs: Optional[list] = None
    """Container datasets only: where each sample's bytes are (a :class:`images.Blob` per row, read in
    place); ``samples.path`` then holds ids (``shards/000003.tar#key``, ``train.parquet#12``), not files."""
    split: Optional[str] = None
    """The split audited when the source has several (train / validation / test)."""
    splits: tuple[str, ...] = ()
    """Every split the source has (another one is loaded with ``load_dataset(..., split=name)``)."""
    kept_pixels: Optional[list] = field(default=None, repr=False, compare=False)
    """Per sample, the pixels of a small image that the load's check decoded (None where it kept none): the first
    decode at a working size (:func:`decoded_images`) resizes them instead of reading the files again."""

    @property
    def label_ids(self) -> np.ndarray:
        codes = pd.Categorical(self.samples["label"], categories=self.classes).codes
        return np.asarray(codes, dtype=np.int64)

    @property
    def has_captions(self) -> bool:
        return "caption" in self.samples.columns

    @property
    def in_container(self) -> bool:
        """True when images live inside files (parquet / arrow / tar shards) rather than one file each."""
        return self.refs is not None

    def abspaths(self) -> list[Path]:
        """Image files, for code that copies or links files (folder export); containers have none."""
        if self.in_container:
            raise DatasetError(f"{self.name}: images are inside container files ({self.samples['path'].iat[0]}, ...), "
                               "not one file each")
        root = self.root
        return [root / p for p in self.samples["path"].tolist()]

    def image_refs(self) -> list[images.ImageSource]:
        """Where each sample's image is read from (files or in-place container members): what decoding uses."""
        return list(self.refs) if self.in_container else self.abspaths()

    def image_ref(self, path: str) -> images.ImageSource:
        """One sample's image by its ``path`` (file path or container id)."""
        if not self.in_container:
            return self.root / path
        if "_ref_of" not in self.__dict__:
            self.__dict__["_ref_of"] = dict(zip(self.samples["path"].tolist(), self.refs))
        return self.__dict__["_ref_of"][path]

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, root={str(self.root)!r}, n={len(self)}, "
            f"classes={len(self.classes)}, fingerprint={self.fingerprint[:12]}...)"
        )


# --------------------------------------------------------------------------- file checks


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


KEEP_PIXELS_MAX_BYTES = 1 << 30
"""At most this much memory holds the pixels a load keeps (:data:`~pruning_core.data.images.KEEP_PIXELS_MAX_SIDE`):
350,000 CIFAR-size images.  A dataset that needs more keeps none (its first decode reads the files again)."""


class _PixelStash:
    """The decoded pixels of small images that a load's check keeps, by row, within :data:`KEEP_PIXELS_MAX_BYTES`
    (past it, all are dropped: half a stash would save half a decode for the same memory)."""

    def __init__(self, n: int) -> None:
        self.rows: Optional[list] = [None] * n
        self.nbytes, self.limit = 0, KEEP_PIXELS_MAX_BYTES
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.rows is not None

    def keep(self, i: int, pixels: np.ndarray) -> None:
        with self._lock:
            if self.rows is None:
                return
            self.nbytes += pixels.nbytes
            if self.nbytes > self.limit:
                self.rows = None
            else:
                self.rows[i] = pixels


def _check_one(abspath: str, real_root: str, check_images: bool, ledger: Optional[CheckLedger] = None,
               ) -> tuple[int, int, Optional[str], Optional[str], Optional[np.ndarray]]:
    """Stat one file once (lstat, plus realpath for symlinks) and optionally decode it (not when ``ledger``
    says it decoded at this size and mtime).  A small file (:data:`~pruning_core.data.images.SMALL_IMAGE_BYTES`)
    is decoded in full and its pixels returned when the image is small too (:func:`images.decode_small`).

    Returns ``(size, mtime_ns, kind, reason, pixels)``; ``kind`` is None when the file is fine.
    """
    try:
        st = os.lstat(abspath)
        if stat_mod.S_ISLNK(st.st_mode):
            target = os.path.realpath(abspath)
            if not _is_inside(target, real_root):
                return 0, 0, KIND_OUTSIDE, f"symlink points outside the dataset root (to {target})", None
            st = os.stat(abspath)
    except FileNotFoundError:
        return 0, 0, KIND_MISSING, "file not found", None
    except NotADirectoryError:
        return 0, 0, KIND_MISSING, "file not found (a parent folder is a file)", None
    except PermissionError:
        return 0, 0, KIND_UNREADABLE, "permission denied", None
    except OSError as exc:
        return 0, 0, KIND_UNREADABLE, f"cannot read file ({exc.strerror or exc})", None
    if stat_mod.S_ISDIR(st.st_mode):
        return 0, 0, KIND_NOT_IMAGE, "is a directory, not an image file", None
    if not stat_mod.S_ISREG(st.st_mode):
        return 0, 0, KIND_NOT_IMAGE, "not a regular file", None
    if st.st_size == 0:
        return 0, st.st_mtime_ns, KIND_EMPTY_FILE, images.REASON_EMPTY, None
    pixels = None
    if check_images and not (ledger is not None and ledger.decoded(abspath, st.st_size, st.st_mtime_ns)):
        if st.st_size < images.SMALL_IMAGE_BYTES:
            reason, pixels = images.decode_small(abspath)
        else:
            reason = images.check_image(abspath, size=st.st_size)
        if reason is not None:
            return st.st_size, st.st_mtime_ns, _IMAGE_REASON_KIND.get(reason, KIND_CORRUPT), reason, None
    return st.st_size, st.st_mtime_ns, None, None, pixels


def _check_files(
    abspaths: list[str],
    real_root: str,
    check_images: bool,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelToken],
    workers: Optional[int] = None,
    chunk: int = 512,
    ledger: Optional[CheckLedger] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[list]]:
    """Run :func:`_check_one` over all files in a thread pool, reporting progress per chunk; the files that
    decoded go into ``ledger``.  The last value: the pixels kept by row (:class:`_PixelStash`), or None."""
    n = len(abspaths)
    sizes = np.zeros(n, dtype=np.int64)
    mtimes = np.zeros(n, dtype=np.int64)
    kinds = np.full(n, None, dtype=object)
    reasons = np.full(n, None, dtype=object)
    stash = _PixelStash(n)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            if cancel is not None and cancel.cancelled:
                return
            sizes[i], mtimes[i], kinds[i], reasons[i], pixels = _check_one(abspaths[i], real_root, check_images, ledger)
            if pixels is not None:
                stash.keep(i, pixels)

    if workers is None:
        workers = images.decode_workers(abspaths) if check_images else images.default_workers()
    images.map_file_chunks(n, work, chunk=chunk, workers=workers, stage=CHECK_STAGE, progress=progress,
                           cancel=cancel, thread_name="check", message="decoding images" if check_images else "stat",
                           files=[p for p in abspaths if ledger is None or p not in ledger.known] if check_images else ())
    if ledger is not None and check_images:
        ok = np.flatnonzero(np.equal(kinds, None))
        ledger.record([abspaths[i] for i in ok], sizes[ok], mtimes[ok])
    return sizes, mtimes, kinds, reasons, stash.rows


# --------------------------------------------------------------------------- core builder


def _normalise_labels(col: pd.Series) -> pd.Series:
    """Labels as stripped ``str`` (object dtype), ``None`` where missing or blank.

    Integers become their decimal text; integral floats (``1.0``, what pandas makes of an int
    column with gaps) become ``"1"`` too, so a class never splits into ``"1"`` and ``"1.0"``.
    """
    missing = col.isna().to_numpy()
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = ~missing & np.isfinite(vals) & (vals == np.round(vals))
        txt = col.astype(str).to_numpy(dtype=object)
        txt[integral] = vals[integral].astype(np.int64).astype(str)
    else:
        txt = col.astype(str).to_numpy(dtype=object)
    s = pd.Series(txt, index=col.index, dtype="string").str.strip()
    bad = missing | s.eq("").fillna(True).to_numpy(dtype=bool)
    return pd.Series(s.to_numpy(dtype=object), index=col.index).where(~bad, None)


class _Problems:
    """One (kind, reason) per row, first one wins: rows keep the earliest reason found."""

    def __init__(self, n: int) -> None:
        self.kind = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)

    @property
    def ok(self) -> np.ndarray:
        return np.equal(self.kind, None)

    def flag(self, mask: np.ndarray, kind: str, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool) & self.ok
        self.kind[mask] = kind
        self.reason[mask] = reason


def _rel_paths(raw: pd.Series, root_lexical: str, root_real: str, probs: _Problems) -> pd.Series:
    """Normalise manifest paths to root-relative POSIX paths; flag empty / escaping ones."""
    s = raw.astype("string")
    empty = (s.isna() | (s.str.strip() == "")).to_numpy(dtype=bool)
    probs.flag(s.str.contains(_URL, regex=True).fillna(False).to_numpy(dtype=bool), KIND_URL,
               "URLs are not read; download the files first and list their local paths")
    probs.flag(s.str.contains(_WINDOWS, regex=True).fillna(False).to_numpy(dtype=bool), KIND_WINDOWS_PATH,
               "a Windows path (drive letter or \\\\server); list paths relative to the dataset root, "
               "with '/' between folders")
    norm = s.fillna("").astype(object).map(posixpath.normpath)
    is_abs = norm.str.startswith("/").to_numpy(dtype=bool)
    rel = norm.copy()
    inside_abs = np.zeros(len(raw), dtype=bool)
    for prefix in dict.fromkeys((root_lexical.rstrip("/") + "/", root_real.rstrip("/") + "/")):
        hit = is_abs & ~inside_abs & norm.str.startswith(prefix).to_numpy(dtype=bool)
        rel[hit] = norm[hit].str.slice(len(prefix))
        inside_abs |= hit
    escapes = ~is_abs & ((norm == "..") | norm.str.startswith("../")).to_numpy(dtype=bool)
    probs.flag(empty, KIND_EMPTY_PATH, "empty path")
    probs.flag(escapes, KIND_OUTSIDE, "path escapes the dataset root (leads outside it with '..')")
    probs.flag(is_abs & ~inside_abs, KIND_OUTSIDE, f"absolute path is outside the dataset root {root_real}")
    probs.flag(rel.isin(["", "."]).to_numpy(dtype=bool), KIND_EMPTY_PATH, "path is the dataset root itself")
    return rel


def _real_dirs_outside(rel: pd.Series, ok: np.ndarray, root_lexical: str, root_real: str) -> np.ndarray:
    """True for rows whose parent folder resolves (through symlinks) outside the root.

    Folders are few (one per class), so realpath runs once per unique folder, not per file.
    """
    parents = rel[ok].map(posixpath.dirname)
    outside = np.zeros(len(rel), dtype=bool)
    verdict = {
        d: bool(d) and not _is_inside(os.path.realpath(os.path.join(root_lexical, d)), root_real)
        for d in parents.unique()
    }
    if any(verdict.values()):
        outside[ok] = parents.map(verdict).to_numpy(dtype=bool)
    return outside


def from_frame(
    frame: pd.DataFrame,
    root: os.PathLike | str,
    *,
    name: Optional[str] = None,
    check_images: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    rows: Optional[list] = None,
    extra_issues: Optional[list[Issue]] = None,
    expected_classes: Optional[list[str]] = None,
    workers: Optional[int] = None,
    ledger_dir: Optional[os.PathLike | str] = None,
) -> Dataset:
    """Validate an in-memory table with ``path`` and ``label`` (optional ``caption``, extras).

    This is what both loaders end in, and what code that writes its own files (the demo
    dataset) uses.  ``rows`` gives the row number each issue reports (default 1..N, None
    for image folders); ``expected_classes`` are classes that should exist (image folders)
    and get a warning when they end up with no valid sample.  Cheap vectorised checks run
    first and each row keeps the first reason that applies, so the per-file work (stat,
    decode) only touches rows that are still valid.  ``ledger_dir``: where the record of files that
    decoded is kept (:mod:`pruning_core.data.ledger`; the result store's ``checked/``): an unchanged file
    is not decoded again.  None decodes every file.
    """
    root_path = Path(root).expanduser()
    root_lexical = os.path.abspath(root_path)
    root_real = os.path.realpath(root_lexical)
    if not os.path.isdir(root_real):
        raise DatasetError(f"dataset root {root_lexical} is not a folder")
    check_dataset_root(root_lexical)
    _require_columns(frame, "table")
    n = len(frame)
    if n == 0:
        raise DatasetError("the dataset has no rows: nothing to load")
    frame = frame.reset_index(drop=True)
    row_no = np.arange(1, n + 1, dtype=object) if rows is None else np.asarray(list(rows), dtype=object)

    probs = _Problems(n)
    labels = _normalise_labels(frame["label"])
    rel = _rel_paths(frame["path"], root_lexical, root_real, probs)
    probs.flag(labels.isna().to_numpy(), KIND_EMPTY_LABEL, "empty or missing label")
    _flag_duplicates(rel, labels, row_no, probs)
    probs.flag(
        _real_dirs_outside(rel, probs.ok, root_lexical, root_real),
        KIND_OUTSIDE,
        "folder resolves outside the dataset root (symlink)",
    )
    sizes, mtimes, pixels = _check_valid_files(rel, root_lexical, root_real, probs, check_images, progress, cancel,
                                               workers, open_ledger(ledger_dir, root_real) if check_images else None)
    return _finish(frame, rel, labels, probs, row_no, extra_issues or [], expected_classes or [], sizes, mtimes,
                   name=name or Path(root_real).name, root=Path(root_real), pixels=pixels)


def _finish(frame: pd.DataFrame, rel: pd.Series, labels: pd.Series, probs: _Problems, row_no: np.ndarray,
            extra_issues: list[Issue], expected_classes: list[str], sizes: np.ndarray, stamps: np.ndarray,
            **fields) -> Dataset:
    """The stages after the checks, shared by files and containers: issues, the samples table, classes,
    class warnings and the fingerprint (``fields``: the Dataset's name, root, for files the pixels the check kept
    by row, and for containers refs)."""
    issues = [*extra_issues, *_row_issues(frame["path"], row_no, probs)]
    if not probs.ok.any():
        errs = [i for i in issues if i.severity == "error"][:5] or issues[:5]
        first = "; ".join(
            (f"row {i.row}: " if i.row is not None else "") + f"{i.path or ''}: {i.reason}" for i in errs
        )
        raise DatasetError(f"no valid samples among {len(frame):,} rows. First problems: {first}")

    keep = np.flatnonzero(probs.ok)
    samples, caption_issues = _assemble_samples(frame, rel, labels, keep, row_no)
    issues += caption_issues
    classes = sorted(samples["label"].unique().tolist())
    issues += _class_warnings(samples["label"], classes, expected_classes)
    refs, pixels = fields.pop("refs", None), fields.pop("pixels", None)
    return Dataset(
        samples=samples,
        classes=classes,
        report=ValidationReport(issues=issues, n_valid=len(samples)),
        fingerprint=_fingerprint(samples, sizes[keep], stamps[keep]),
        refs=None if refs is None else [refs[i] for i in keep],
        kept_pixels=None if pixels is None else [pixels[i] for i in keep],
        **fields,
    )


def from_container(
    scan: Scan,
    *,
    check_images: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
) -> Dataset:
    """Validate what a container reader listed, as :func:`from_frame` validates files: empty labels, duplicate
    keys, empty / corrupt image bytes (every member is read once, in place, hashed and decoded), plus the
    reader's own problems (a truncated shard, a key without an image).  Issues name the sample id."""
    extra = [Issue(None, p.path, p.reason, p.severity, p.kind) for p in scan.problems]
    frame = scan.frame.reset_index(drop=True)
    n = len(frame)
    if n == 0:
        found = "; ".join(f"{i.path}: {i.reason}" for i in extra[:3])
        raise DatasetError(f"{scan.root}: no samples found" + (f" ({found})" if found else ""))
    row_no = np.full(n, None, dtype=object)
    probs = _Problems(n)
    ids = frame["path"].astype(str)
    labels = _normalise_labels(frame["label"])
    probs.flag(labels.isna().to_numpy(), KIND_EMPTY_LABEL, "empty or missing label")
    _flag_duplicates(ids, labels, row_no, probs, KIND_DUPLICATE_KEY)
    sizes, digests = _check_blobs(scan.refs, probs, check_images, progress, cancel, workers)
    return _finish(frame, ids, labels, probs, row_no, extra, [], sizes, digests, name=scan.name,
                   root=Path(os.path.realpath(scan.root)), refs=scan.refs, split=scan.split, splits=scan.splits)


REASON_EMPTY_BYTES = "image bytes are empty"


def _check_blob(ref: images.Blob, check_images: bool) -> tuple[int, str, Optional[str], Optional[str]]:
    """Read one member once: (size, content digest, kind, reason); ``kind`` is None when it is fine."""
    try:
        data = ref.read_bytes()
    except OSError as exc:
        return 0, "", KIND_UNREADABLE, f"cannot read ({exc.strerror or exc})"
    if not data:
        return 0, "", KIND_EMPTY_IMAGE, REASON_EMPTY_BYTES
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if check_images:
        reason = images.check_image(LoadedBlob(str(ref), data))
        if reason is not None:
            return len(data), digest, _IMAGE_REASON_KIND.get(reason, KIND_CORRUPT), reason
    return len(data), digest, None, None


def _check_blobs(
    refs: list,
    probs: _Problems,
    check_images: bool,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelToken],
    workers: Optional[int],
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Read, hash and (optionally) decode the members still valid, threaded; flag failures; sizes and digests."""
    n = len(refs)
    idx = np.flatnonzero(probs.ok)
    sizes = np.zeros(n, dtype=np.int64)
    digests = np.full(n, "", dtype=object)

    def work(start: int, stop: int) -> None:
        for i in idx[start:stop]:
            if cancel is not None and cancel.cancelled:
                return
            sizes[i], digests[i], kind, reason = _check_blob(refs[i], check_images)
            if kind is not None:
                probs.kind[i], probs.reason[i] = kind, reason

    if workers is None:
        workers = images.decode_workers([refs[i] for i in idx]) if check_images else images.default_workers()
    images.map_file_chunks(len(idx), work, chunk=chunk, workers=workers, stage=CHECK_STAGE, progress=progress,
                           cancel=cancel, thread_name="check", message="reading members in place")
    return sizes, digests


def _flag_duplicates(rel: pd.Series, labels: pd.Series, row_no: np.ndarray, probs: _Problems,
                     kind: str = KIND_DUPLICATE) -> None:
    """Flag every repeat of a path after its first valid row, naming that row and both labels."""
    ok = probs.ok
    dup = ok & rel.where(ok).duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    first_of = pd.Series(np.flatnonzero(ok & ~dup), index=rel[ok & ~dup].to_numpy())
    firsts = rel[dup].map(first_of).to_numpy(dtype=np.int64)
    msgs = []
    for fi, lab in zip(firsts, labels[dup]):
        where = f"row {row_no[fi]}" if row_no[fi] is not None else "an earlier entry"
        fl = labels.iat[fi]
        msgs.append(f"duplicate of {where}" + (f" (labelled {fl!r} there, {lab!r} here)" if fl != lab else ""))
    reasons = np.full(len(rel), None, dtype=object)
    reasons[dup] = msgs
    _flag_each(probs, dup, kind, reasons)


def _check_valid_files(
    rel: pd.Series,
    root_lexical: str,
    root_real: str,
    probs: _Problems,
    check_images: bool,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelToken],
    workers: Optional[int],
    ledger: Optional[CheckLedger] = None,
) -> tuple[np.ndarray, np.ndarray, Optional[list]]:
    """Stat (and optionally decode) the rows still valid, threaded; flag failures; return sizes, mtimes and the
    pixels kept by row (None: none kept)."""
    n = len(rel)
    idx = np.flatnonzero(probs.ok)
    abspaths = [os.path.join(root_lexical, p) for p in rel.to_numpy()[idx]]
    sizes_c, mtimes_c, kinds_c, reasons_c, pixels_c = _check_files(
        abspaths, root_real, check_images, progress, cancel, workers=workers, ledger=ledger
    )
    sizes = np.zeros(n, dtype=np.int64)
    mtimes = np.zeros(n, dtype=np.int64)
    sizes[idx], mtimes[idx] = sizes_c, mtimes_c
    failed = np.not_equal(kinds_c, None)
    probs.kind[idx[failed]] = kinds_c[failed]
    probs.reason[idx[failed]] = reasons_c[failed]
    pixels: Optional[list] = None
    if pixels_c is not None and any(p is not None for p in pixels_c):
        pixels = [None] * n
        for i, kept in zip(idx, pixels_c):
            pixels[i] = kept
    return sizes, mtimes, pixels


def _row_issues(raw_paths: pd.Series, row_no: np.ndarray, probs: _Problems) -> list[Issue]:
    """One error per skipped row, with the path as the user wrote it."""
    paths = raw_paths.astype(object).where(raw_paths.notna(), None).to_numpy()
    return [
        Issue(row_no[i], None if paths[i] is None else str(paths[i]), probs.reason[i], "error", probs.kind[i])
        for i in np.flatnonzero(~probs.ok)
    ]


def _assemble_samples(
    frame: pd.DataFrame, rel: pd.Series, labels: pd.Series, keep: np.ndarray, row_no: np.ndarray
) -> tuple[pd.DataFrame, list[Issue]]:
    """The samples table (path, label, [caption], extra columns unchanged) and a warning for empty captions."""
    samples = pd.DataFrame({"path": rel.to_numpy()[keep].astype(object), "label": labels.to_numpy()[keep]})
    issues: list[Issue] = []
    if "caption" in frame.columns:
        cap = frame["caption"].iloc[keep].reset_index(drop=True)
        cap = cap.astype(object).where(cap.notna(), "").astype(str)
        samples["caption"] = cap.to_numpy(dtype=object)
        empty_cap = (cap.str.strip() == "").to_numpy()
        if empty_cap.any():
            shown = [str(r) for r in row_no[keep][empty_cap][:10] if r is not None]
            more = ", ..." if empty_cap.sum() > 10 else ""
            issues.append(
                Issue(
                    None,
                    None,
                    f"{int(empty_cap.sum()):,} kept sample(s) have an empty caption"
                    + (f" (rows {', '.join(shown)}{more})" if shown else ""),
                    "warning",
                    KIND_EMPTY_CAPTION,
                )
            )
    for col in frame.columns:
        if col not in ("path", "label", "caption"):
            samples[col] = frame[col].iloc[keep].reset_index(drop=True)
    return samples, issues


def _class_warnings(labels: pd.Series, classes: list[str], expected_classes: list[str]) -> list[Issue]:
    """Warnings about classes the label-noise scores cannot serve: empty, the only one, or a single sample."""
    issues = [Issue(None, c, f"class '{c}' has no valid images", "warning", KIND_EMPTY_CLASS)
              for c in expected_classes if c not in classes]
    if len(classes) == 1:
        issues.append(
            Issue(None, None, f"only one class ('{classes[0]}'): label-noise scores need two or more",
                  "warning", KIND_SINGLE_CLASS)
        )
    sizes_by_class = labels.value_counts()
    for c in sorted(sizes_by_class.index[sizes_by_class < 2]):
        issues.append(Issue(None, c, f"class '{c}' has a single sample: cross-fitting cannot hold it out, so its "
                                     "label-noise scores are unreliable", "warning", KIND_SINGLETON_CLASS))
    return issues


def _flag_each(probs: _Problems, mask: np.ndarray, kind: str, reasons: np.ndarray) -> None:
    """Like :meth:`_Problems.flag` with a per-row reason array of length N."""
    mask = mask & probs.ok
    probs.kind[mask] = kind
    probs.reason[mask] = reasons[mask]


def _fingerprint(samples: pd.DataFrame, sizes: np.ndarray, stamps: np.ndarray) -> str:
    """sha256 over one tab-separated line per sample, built with vectorised string ops.

    ``stamps``: each file's mtime (ns) for files, each member's content digest for container members.
    """
    parts = [
        samples["path"].astype(str),
        pd.Series(sizes, dtype=np.int64).astype(str),
        pd.Series(stamps, dtype=np.int64 if stamps.dtype.kind in "iu" else object).astype(str),
        samples["label"].astype(str),
    ]
    if "caption" in samples.columns:
        parts.append(samples["caption"].astype(str).str.replace("\\", "\\\\").str.replace("\n", "\\n"))
    line = parts[0].str.cat(parts[1:], sep="\t")
    h = hashlib.sha256(FINGERPRINT_VERSION.encode())
    h.update(f"|caption={'caption' in samples.columns}|n={len(samples)}\n".encode())
    h.update(line.str.cat(sep="\n").encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _require_columns(frame: pd.DataFrame, what: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(repr(str(c)) for c in frame.columns) or "none"
        hint = ""
        if len(frame.columns) == 1 and any(sep in str(frame.columns[0]) for sep in (";", "\t", "|")):
            hint = " (the file seems to use another separator than ','; save it comma-separated)"
        raise DatasetError(
            f"{what} is missing required column(s) {', '.join(map(repr, missing))}; "
            f"found columns: {found}{hint}. Required: 'path', 'label'; optional: 'caption'."
        )


# --------------------------------------------------------------------------- loaders


_DIR_LINK_OUTSIDE = "folder symlink leads outside the dataset root; not followed"


class _WalkGuard:
    """Stops a folder walk that meets mostly non-image files: it is not in a dataset (a home folder, a
    source tree), and walking on would list every file there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = 0
        self.others: dict[str, int] = {}
        self.n_others = 0

    def met(self, name: str, is_image: bool) -> None:
        if is_image:
            self.images += 1
            return
        ext = os.path.splitext(name)[1].lower() or "(none)"
        self.others[ext] = self.others.get(ext, 0) + 1
        self.n_others += 1
        if self.n_others >= WALK_PATIENCE and self.images < WALK_MIN_IMAGE_SHARE * (self.images + self.n_others):
            common = sorted(self.others.items(), key=lambda kv: -kv[1])[:3]
            shown = ", ".join(f"{n:,} {e}" for e, n in common)
            raise DatasetError(f"{self.root}: stopped after {self.images + self.n_others:,} files, of which only "
                               f"{self.images:,} are images (others: {shown}); is this the dataset folder? "
                               "Give the folder that holds root/<class>/<image> files")


def load_image_folder(
    root: os.PathLike | str,
    *,
    check_images: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
    ledger_dir: Optional[os.PathLike | str] = None,
) -> Dataset:
    """Load ``root/<class>/<image>`` (subfolders of a class folder count for that class).

    Image extensions (case-insensitive): jpg jpeg png bmp gif webp tif tiff.  Files directly
    under ``root`` and non-image files are ignored with a warning; hidden files and folders
    (``.DS_Store``, ``.git``) are ignored silently.  Paths are sorted, so row order is stable.
    A folder symlink that leads outside ``root`` is one warning and is never entered, so no name
    from outside the dataset reaches the report (links to folders inside a class are not followed).
    """
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DatasetError(f"image folder {root_path} does not exist")
    if not root_path.is_dir():
        raise DatasetError(f"{root_path} is not a folder")
    check_dataset_root(root_path, "image folder", walked=True)
    walk = _WalkGuard(root_path)
    issues: list[Issue] = []
    paths: list[str] = []
    labels: list[str] = []
    class_dirs: list[str] = []
    try:
        top = sorted(os.scandir(root_path), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list image folder {root_path}: {exc.strerror or exc}") from None
    real_root = os.path.realpath(root_path)
    for entry in top:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.is_symlink() and not _is_inside(os.path.realpath(entry.path), real_root):
            issues.append(Issue(None, entry.name, _DIR_LINK_OUTSIDE, "warning", KIND_OUTSIDE))
        elif entry.is_dir():
            class_dirs.append(entry.name)
        else:
            issues.append(
                Issue(None, entry.name, "file directly under the root is ignored (images go in <class>/ folders)",
                      "warning", KIND_IGNORED)
            )
    for cls in class_dirs:
        check(cancel)
        base = root_path / cls
        found = 0
        for dirpath, dirnames, filenames in os.walk(base):  # never follows links to folders
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, root_path).replace(os.sep, "/")
            for d in dirnames:
                link = os.path.join(dirpath, d)
                if os.path.islink(link) and not _is_inside(os.path.realpath(link), real_root):
                    issues.append(Issue(None, f"{rel_dir}/{d}", _DIR_LINK_OUTSIDE, "warning", KIND_OUTSIDE))
                elif os.path.splitext(d)[1].lower() in images.IMAGE_EXTENSIONS:
                    # a folder named like an image (x.jpg/): listed as a sample, so the file check skips it
                    # with the reason a manifest naming it gets
                    paths.append(f"{rel_dir}/{d}")
                    labels.append(cls)
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                rel = f"{rel_dir}/{fname}"
                is_image = os.path.splitext(fname)[1].lower() in images.IMAGE_EXTENSIONS
                walk.met(fname, is_image)
                if is_image:
                    paths.append(rel)
                    labels.append(cls)
                    found += 1
                else:
                    issues.append(Issue(None, rel, "not an image file extension; ignored", "warning", KIND_IGNORED))
        if found == 0:
            issues.append(Issue(None, cls, f"class '{cls}' has no images", "warning", KIND_EMPTY_CLASS))
    if not paths:
        detail = "no class folders" if not class_dirs else f"{len(class_dirs)} class folder(s) but no image files"
        raise DatasetError(f"no images found in {root_path}: {detail}; expected layout root/<class>/<image>.jpg")
    frame = pd.DataFrame({"path": paths, "label": labels})
    empty = {i.path for i in issues if i.kind == KIND_EMPTY_CLASS}
    return from_frame(
        frame,
        root_path,
        name=root_path.resolve().name,
        check_images=check_images,
        progress=progress,
        cancel=cancel,
        rows=[None] * len(frame),
        extra_issues=issues,
        expected_classes=[c for c in class_dirs if c not in empty],
        workers=workers,
        ledger_dir=ledger_dir,
    )


def read_manifest(path: os.PathLike | str) -> pd.DataFrame:
    """Read a CSV or parquet manifest as a table; raise :class:`DatasetError` when unusable.

    CSV: ``path``, ``label`` and ``caption`` are read as text with only the empty string as
    missing (so a class called ``NA`` survives); other columns are parsed as pandas would.
    """
    path = Path(path).expanduser()
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(f"{path}: unsupported manifest type {path.suffix!r}; use .csv, .parquet or .pq")
    if not path.exists():
        raise DatasetError(f"manifest {path} does not exist")
    if not path.is_file():
        raise DatasetError(f"manifest {path} is not a file")
    if path.stat().st_size == 0:
        raise DatasetError(f"manifest {path} is empty (0 bytes)")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
            header.columns = [str(c).strip() for c in header.columns]
            _require_columns(header, f"manifest {path.name}")
            text_cols = [c for c in ("path", "label", "caption") if c in header.columns]
            frame = pd.read_csv(
                path,
                encoding="utf-8-sig",
                dtype={c: str for c in text_cols},
                keep_default_na=False,
                na_values={c: ([""] if c in text_cols else _PANDAS_NA) for c in header.columns},
                skipinitialspace=False,
            )
    except DatasetError:
        raise
    except pd.errors.EmptyDataError:
        raise DatasetError(f"manifest {path} is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"manifest {path} could not be parsed as CSV: {exc}") from None
    except PermissionError:
        raise DatasetError(f"manifest {path}: permission denied") from None
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise DatasetError(f"manifest {path} could not be read as {kind}: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _require_columns(frame, f"manifest {path.name}")
    if len(frame) == 0:
        raise DatasetError(f"manifest {path} has a header but no data rows")
    return frame


def load_manifest(
    path: os.PathLike | str,
    root: Optional[os.PathLike | str] = None,
    *,
    split: Optional[str] = None,
    check_images: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
    ledger_dir: Optional[os.PathLike | str] = None,
) -> Dataset:
    """Load a CSV / parquet manifest (``path,label`` required, ``caption`` and ``split`` optional).

    ``root`` defaults to the manifest's folder.  Relative paths resolve against ``root``;
    absolute paths are accepted only inside it (and stored relative to it).  Extra columns
    are carried through unchanged.  Issue rows are 1-based data rows (header not counted).
    With a ``split`` column only the rows of one split are loaded (``split``, default train or the
    first); issues keep the manifest's row numbers.
    """
    path = Path(path).expanduser()
    frame = read_manifest(path)
    root_path = Path(root).expanduser() if root is not None else path.resolve().parent
    rows, splits = None, ()
    if SPLIT_COLUMN in frame.columns:
        names = frame[SPLIT_COLUMN].astype("string").str.strip()
        splits = readers.tables.order_splits(names.dropna().unique().tolist())
        split = _choose_split(splits, split, path)
        chosen = names.eq(split).fillna(False).to_numpy(dtype=bool)
        rows = (np.flatnonzero(chosen) + 1).tolist()
        frame = frame[chosen]
    elif split is not None:
        raise DatasetError(f"manifest {path.name} has no {SPLIT_COLUMN!r} column, so split {split!r} does not apply")
    dataset = from_frame(
        frame,
        root_path,
        name=f"{path.stem}:{split}" if splits else path.stem,
        check_images=check_images,
        progress=progress,
        cancel=cancel,
        workers=workers,
        rows=rows,
        ledger_dir=ledger_dir,
    )
    dataset.split, dataset.splits = (split, splits) if splits else (None, ())
    return dataset


SPLIT_COLUMN = "split"
"""A manifest column naming each row's split (train / val / test)."""


def _choose_split(available: tuple[str, ...], split: Optional[str], where: Path) -> str:
    """The split asked for (it must exist), else train, else the first in the usual order."""
    if split is None:
        return available[0]
    if split not in available:
        raise DatasetError(f"{where}: no split {split!r}; it has {', '.join(available)}")
    return split


def load_split_folder(root: os.PathLike | str, split: Optional[str] = None, **kw) -> Dataset:
    """``root/train/<class>/<image>``, ``root/val/...``, ``root/test/...``: one split loaded as an image folder
    (its ids relative to that split's folder); the others stay listed in ``splits`` for Evaluate or leakage."""
    root_path = Path(root).expanduser()
    splits = tuple(readers.split_folders(root_path))
    if not splits:
        raise DatasetError(f"{root_path} has no train/ val/ test/ subfolders")
    split = _choose_split(splits, split, root_path)
    dataset = load_image_folder(root_path / split, **kw)
    dataset.name, dataset.split, dataset.splits = f"{root_path.resolve().name}:{split}", split, splits
    return dataset


def load_dataset(
    source: os.PathLike | str,
    root: Optional[os.PathLike | str] = None,
    *,
    format: Optional[str] = None,
    split: Optional[str] = None,
    **kw,
) -> Dataset:
    """Load any dataset format of :data:`readers.FORMATS` (``format`` None: detected from the path).

    Folders (``root/<class>/<image>``, or with ``train/ val/ test/`` subfolders), ``.csv`` / ``.parquet`` /
    ``.pq`` manifests, and containers read in place: parquet / arrow tables of image bytes, Hugging Face
    ``save_to_disk`` folders and WebDataset shards (``name-{000000..000009}.tar``).  ``split`` picks one
    split where the source has several.  ``ledger_dir`` (files only): see :func:`from_frame`.
    """
    text = os.fspath(source)
    src = Path(text).expanduser()
    if not src.exists() and not readers.shards.is_shard_source(text):
        raise DatasetError(f"{src} does not exist (expected an image folder, a .csv/.parquet manifest, parquet/arrow "
                           "image tables, a save_to_disk folder or .tar shards)")
    if src.is_dir():  # before detecting the format, which lists the folder's files recursively
        check_dataset_root(src, "dataset folder", walked=True)
    fmt = format or readers.detect_format(text)
    if fmt not in readers.FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; one of {', '.join(readers.FORMATS)}")
    if root is not None and fmt != "manifest":
        raise DatasetError(f"root= applies to manifests only; {src} ({readers.FORMATS[fmt]}) is its own root")
    if fmt in readers.CONTAINER_FORMATS:
        try:
            listed = readers.scan(text, fmt, split)
        except DatasetError:
            raise
        except (ValueError, OSError, KeyError) as exc:  # pyarrow's errors are ValueErrors / OSErrors
            message = str(exc)
            raise DatasetError(message if str(src) in message else f"{src}: {message}") from None
        kw.pop("ledger_dir", None)  # members are read in place to hash them: nothing to save by skipping decodes
        return from_container(listed, **kw)
    if fmt == "splits":
        return load_split_folder(src, split, **kw)
    if fmt == "manifest":
        if src.is_dir():
            raise DatasetError(f"{src} is a folder, not a manifest")
        if src.suffix.lower() not in MANIFEST_SUFFIXES:
            raise DatasetError(
                f"{src} is neither a folder nor a manifest: use an image folder (root/<class>/<image>) "
                "or a .csv / .parquet / .pq file with columns path,label[,caption]"
            )
        return load_manifest(src, root, split=split, **kw)
    if split is not None:
        raise DatasetError(f"{src} has no train/ val/ test/ subfolders, so split {split!r} does not apply")
    return load_image_folder(src, **kw)


def decoded_images_step(dataset: Dataset, size: int) -> CachedStep:
    """The cache step of :func:`decoded_images` (also what a cancelled scoring run reports as kept)."""
    return CachedStep("images", dataset.fingerprint, {"size": size, "draft_above": images.KEEP_PIXELS_MAX_SIDE},
                      dataset=dataset.name, label="the decoded images")


def decoded_images(
    dataset: Dataset,
    size: int,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """All images decoded once at ``size`` x ``size`` (uint8, N x H x W x 3), cached for every later run."""

    def compute() -> Computed:
        decoded, failed = images.load_image_array(dataset.image_refs(), size, progress=progress, cancel=cancel,
                                                  pixels=dataset.kept_pixels)
        return Computed(arrays={"images": decoded}, meta={"failed": {str(k): v for k, v in failed.items()}})

    return decoded_images_step(dataset, size).run(store, compute).array("images")


__all__ = [
    "Dataset",
    "DatasetError",
    "ISSUE_COLUMNS",
    "Issue",
    "ValidationReport",
    "check_trainable",
    "decoded_images",
    "decoded_images_step",
    "from_container",
    "from_frame",
    "load_dataset",
    "load_image_folder",
    "load_manifest",
    "load_split_folder",
    "read_manifest",
]
