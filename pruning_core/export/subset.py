"""Write a kept subset: kept/removed tables with relabels, path-safe image folders, the bundle zip.

The reproducibility manifest that names what a subset depended on is ``pruning_core.export.manifest``.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from cache.store import atomic_write_bytes
from pruning_core.data.readers.base import ID_SEPARATOR
from pruning_core.runtime.safety import CSV_QUOTING, csv_safe


def paths_digest(paths: pd.Series) -> str:
    """Order-independent digest of a set of sample paths."""
    return hashlib.sha256("\n".join(sorted(paths.astype(str))).encode()).hexdigest()


TABLE_FORMATS = ("csv", "parquet", "pq", "json")
"""Table formats PruneScope writes (by file suffix or the app's format choice)."""


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """CSV, parquet or JSON by the file's suffix, written atomically (CSV formula-safe, see :func:`table_bytes`)."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"cannot write {path}: use a .csv, .parquet or .json file name")
    atomic_write_bytes(path, table_bytes(frame, suffix))


# ----------------------------------------------------------------------------- kept + removed tables

STATUS_COLUMNS = ["path", "label", "original_label", "status", "removed_by"]


def apply_relabels(frame: pd.DataFrame, relabels: Optional[Mapping[str, str]]) -> pd.DataFrame:
    """A copy with reviewer relabels applied to ``label``; the given label moves to ``original_label``."""
    out = frame.copy()
    out["original_label"] = out["label"]
    if relabels:
        new = out["path"].map(dict(relabels))
        out["label"] = new.where(new.notna(), out["label"])
    return out


def selection_table(
    frame: pd.DataFrame,
    mask,
    *,
    removed_paths: Optional[list[str]] = None,
    relabels: Optional[Mapping[str, str]] = None,
) -> pd.DataFrame:
    """Every sample with its fate: ``status`` kept/removed, ``removed_by`` review/selection, relabels applied.

    Columns: path, label (after relabel), original_label, status, removed_by, then the rest of
    ``frame`` (caption, scores) in their order.
    """
    mask = np.asarray(mask, dtype=bool)
    if len(mask) != len(frame):
        raise ValueError(f"mask has {len(mask)} entries for {len(frame)} samples")
    out = apply_relabels(frame, relabels)
    reviewed_out = out["path"].isin(set(removed_paths or [])).to_numpy()
    out["status"] = np.where(mask, "kept", "removed")
    out["removed_by"] = np.where(mask, "", np.where(reviewed_out, "review", "selection"))
    rest = [c for c in out.columns if c not in STATUS_COLUMNS]
    return out[STATUS_COLUMNS + rest].reset_index(drop=True)


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """The table as CSV, parquet or JSON bytes (what the CLI writes and the app's download buttons serve).

    CSV is for people and spreadsheets, so text cells that would run as a formula are neutralised
    (:func:`pruning_core.runtime.safety.csv_safe`); parquet and JSON keep every value as it is.
    """
    import io

    fmt = fmt.lower().lstrip(".")
    if fmt == "csv":
        return csv_safe(frame).to_csv(index=False, quoting=CSV_QUOTING).encode()
    if fmt in ("parquet", "pq"):
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        return frame.to_json(orient="records", indent=1).encode()
    raise ValueError(f"unknown format {fmt!r}: use csv, parquet or json")


# ----------------------------------------------------------------------------- image-folder export

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def safe_name(name: str, fallback: str = "_") -> str:
    """One path component that cannot escape its folder: no separators, no '..', no leading dot.

    Characters outside letters, digits, ``_ - . space`` become ``_``; an empty or reserved
    result becomes ``fallback`` (plus the original's hash where needed to stay distinct).
    """
    text = unicodedata.normalize("NFC", str(name)).replace("\x00", "")
    text = _UNSAFE.sub("_", text).strip(" .")
    text = text.lstrip(".")
    if not text or text.lower().split(".")[0] in _WINDOWS_RESERVED:
        text = f"{fallback}{text and '_' + text}"
    return text[:150]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def folder_layout(frame: pd.DataFrame) -> pd.Series:
    """Relative destination ``<label>/<file>`` for each row; unique, path-safe, deterministic.

    Two labels that sanitise to the same folder name, or two files with the same base name
    in one class (``a/x.png`` and ``b/x.png``), get a short hash of the original so nothing
    is overwritten; the assignment depends only on the rows, not on the order of the writes.
    """
    labels = frame["label"].astype(str)
    unique_labels = sorted(labels.unique())
    folder_of: dict[str, str] = {}
    seen: dict[str, list[str]] = {}
    for lab in unique_labels:
        seen.setdefault(safe_name(lab, "label").lower(), []).append(lab)
    for key, labs in seen.items():
        for lab in labs:
            base = safe_name(lab, "label")
            folder_of[lab] = base if len(labs) == 1 else f"{base}-{_short_hash(lab)}"
    folders = labels.map(folder_of)
    files = frame["path"].astype(str).map(lambda p: safe_name(PurePosixPath(p.replace("\\", "/")).name, "file"))
    dest = folders + "/" + files
    dup = dest.str.lower().duplicated(keep=False)
    if dup.any():
        stems = files[dup].map(lambda f: PurePosixPath(f).stem)
        suffixes = files[dup].map(lambda f: PurePosixPath(f).suffix)
        hashes = frame.loc[dup, "path"].astype(str).map(_short_hash)
        dest[dup] = folders[dup] + "/" + stems + "-" + hashes + suffixes
    return dest


@dataclass(frozen=True)
class FolderExport:
    out: Path
    written: int
    mode: str
    index_file: Path

    def message(self) -> str:
        verb = {"symlink": "linked", "copy": "copied"}[self.mode]
        return f"{verb} {self.written:,} images into {self.out} (index: {self.index_file.name})"


def export_folder(
    frame: pd.DataFrame,
    root: Path,
    out: Path,
    *,
    mode: str = "symlink",
    sources: Optional[Sequence] = None,
    progress=None,
    cancel=None,
) -> FolderExport:
    """Write ``frame``'s images as ``out/<label>/<file>`` (symlinks or copies).

    ``frame`` has ``path`` (relative to ``root``) and ``label`` (apply relabels first).  ``out``
    must be new or empty, so an export never mixes with an older one; ``out/index.csv``
    maps every source to its destination.  ``sources``: for a container dataset (parquet, shards), each
    row's in-place member (``Dataset.image_ref``); its bytes are written as they are (only ``copy``: a
    member cannot be linked), named after the id (``train.parquet-12.png``, ``shard-000003.tar-key.jpg``).
    """
    import shutil

    from pruning_core.runtime.progress import check, report

    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode must be 'symlink' or 'copy', not {mode!r}")
    out = Path(out).expanduser().resolve()
    root = Path(root).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty: choose a new or empty folder")
    if out == root or root in out.parents:
        raise ValueError(f"{out} is inside the dataset root {root}: choose a folder outside it")
    if sources is not None and mode != "copy":
        raise ValueError("images inside container files can only be copied out (mode 'copy'), not linked")
    if sources is None:
        dest = folder_layout(frame)
        sources = [root / p for p in frame["path"].astype(str)]
    else:
        dest = folder_layout(frame.assign(path=frame["path"].astype(str).str.replace(ID_SEPARATOR, "-", regex=False)))
        dest = dest + pd.Series([_image_suffix(s) for s in sources], index=dest.index)
    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted({d.split("/", 1)[0] for d in dest}):
        (out / folder).mkdir(exist_ok=True)
    total = len(frame)
    for i, (src, rel) in enumerate(zip(sources, dest)):
        target = out / rel
        if mode == "symlink":
            os.symlink(src, target)
        elif isinstance(src, Path):
            shutil.copy2(src, target)
        else:
            target.write_bytes(src.read_bytes())
        if i % 500 == 499:
            report(progress, "export images", i + 1, total)
            check(cancel)
    report(progress, "export images", total, total)
    index = pd.DataFrame({"source": [str(s) for s in sources], "destination": dest.to_numpy(),
                          "label": frame["label"].to_numpy()})
    index_file = out / "index.csv"
    write_table(index, index_file)
    return FolderExport(out, total, mode, index_file)


def _image_suffix(source) -> str:
    """A container member's file suffix from its encoded format (``.jpg``, ``.png``; ``.img`` if unknown)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source.read_bytes())) as im:
            fmt = (im.format or "img").lower()
    except (OSError, UnidentifiedImageError):
        fmt = "img"
    return "." + {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)


# ----------------------------------------------------------------------------- bundle

def bundle_zip(files: Mapping[str, bytes]) -> bytes:
    """A zip of named files (the app's one-click reproducibility bundle)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ----------------------------------------------------------------------------- live preview of a selection
