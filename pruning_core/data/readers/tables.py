"""Parquet and arrow tables of image bytes, read in place: Hugging Face ``save_to_disk`` folders, HF parquet
exports (``data/train-00000-of-00001.parquet``) and any parquet with an image-bytes column and a label column.

Why pyarrow and not the ``datasets`` library: ``datasets.load_dataset("parquet", ...)`` converts the files
into arrow files in its cache folder (a second copy on disk), and ``load_from_disk`` only memory-maps what
pyarrow maps too; pyarrow reads both formats where they are, memory-maps arrow files (HF's own choice) and
reads parquet a row group at a time.  The ``datasets`` feature metadata (an ``Image`` column stored as
``{bytes, path}``, ``ClassLabel`` names for integer labels) is read from the schema's ``huggingface`` entry
or the folder's ``dataset_info.json``.
"""

from __future__ import annotations

import bisect
import functools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pruning_core.data.readers.base import Scan, file_stamp, member_id

TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow"}
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "png", "image_bytes", "bytes")
LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class", "fine_label")
SPLIT_NAMES = ("train", "validation", "valid", "val", "test")
"""Split names recognised in folder and file names, in the order a default split is chosen."""
ROW_GROUP_CACHE = 4
"""Parquet row groups of image bytes kept per file: decode threads read neighbouring rows."""


def _image_field(schema: pa.Schema) -> tuple[str, Optional[str]]:
    """(column, struct field) of the encoded images: a binary column, or HF's ``Image`` struct {bytes, path}."""
    candidates = []
    for f in schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            candidates.append((f.name, None))
        elif pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            sub = f.type.field("bytes").type
            if pa.types.is_binary(sub) or pa.types.is_large_binary(sub):
                candidates.append((f.name, "bytes"))
    if not candidates:
        raise ValueError("no column of image bytes (binary, or a struct with 'bytes'); "
                         f"columns: {', '.join(schema.names)}")
    preferred = [c for c in candidates if c[0].lower() in IMAGE_COLUMN_NAMES]
    return (preferred or candidates)[0]


def _label_column(schema: pa.Schema) -> str:
    for name in LABEL_COLUMN_NAMES:
        if name in schema.names:
            return name
    raise ValueError(f"no label column (one of {', '.join(LABEL_COLUMN_NAMES)}); columns: {', '.join(schema.names)}")


def _class_names(schema: pa.Schema, label: str, info_file: Optional[Path] = None) -> Optional[list[str]]:
    """``ClassLabel`` names of the label column from the HF metadata (schema entry or dataset_info.json)."""
    features = None
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw:
        features = (json.loads(raw).get("info") or {}).get("features")
    if features is None and info_file is not None and info_file.is_file():
        features = json.loads(info_file.read_text()).get("features")
    spec = (features or {}).get(label) or {}
    return list(spec["names"]) if spec.get("_type") == "ClassLabel" and spec.get("names") else None


def has_image_bytes(file: Path) -> bool:
    """A parquet / arrow file with an image-bytes column (a path,label manifest has none)."""
    try:
        _image_field(_schema(file))
        return True
    except (ValueError, OSError, pa.ArrowInvalid):
        return False


def _schema(file: Path) -> pa.Schema:
    if TABLE_SUFFIXES.get(file.suffix.lower()) == "arrow":
        return _arrow_table(str(file), file_stamp(file)).schema
    return pq.read_schema(file)


# --------------------------------------------------------------------------- reading one row's bytes


@functools.lru_cache(maxsize=16)
def _arrow_table(file: str, stamp: tuple[int, int]) -> pa.Table:
    """A memory-mapped arrow file (HF writes the stream format; the file format is read too): zero copy."""
    source = pa.memory_map(file)
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(file)).read_all()


def _bytes_of(array: pa.Array, field: Optional[str]) -> pa.Array:
    return array.field(field) if field is not None else array


class _ArrowImages:
    """Random access to a memory-mapped arrow file's image bytes: its record batches found by bisection."""

    def __init__(self, file: str, stamp: tuple[int, int], column: str, field: Optional[str]) -> None:
        chunks = _arrow_table(file, stamp).column(column).chunks
        self.chunks = [_bytes_of(c, field) for c in chunks]
        self.starts = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).tolist()

    def cell(self, row: int) -> Optional[bytes]:
        c = bisect.bisect_right(self.starts, row) - 1
        return self.chunks[c][row - self.starts[c]].as_py()


class _ParquetImages:
    """Random access to one parquet file's image bytes: row groups read on demand, the last few read kept."""

    def __init__(self, file: str, stamp: tuple[int, int], column: str, field: Optional[str]) -> None:
        self.parquet = pq.ParquetFile(file)
        self.column, self.field = column, field
        sizes = [self.parquet.metadata.row_group(g).num_rows for g in range(self.parquet.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.lock = threading.Lock()
        self.groups: OrderedDict[int, pa.Array] = OrderedDict()

    def group(self, g: int) -> pa.Array:
        found = self.groups.get(g)  # the common case, without the lock: decode threads share row groups
        if found is not None:
            return found
        with self.lock:
            if g in self.groups:
                return self.groups[g]
            array = self.parquet.read_row_group(g, columns=[self.column]).column(0).combine_chunks()
            self.groups[g] = _bytes_of(array, self.field)
            if len(self.groups) > ROW_GROUP_CACHE:
                while len(self.groups) > ROW_GROUP_CACHE:
                    self.groups.popitem(last=False)
                # arrow's default pool (mimalloc) keeps freed pages: without this a 50,000-row pass holds ~90 MB
                # more than it uses (docs/benchmarks.md, "Fewer threads for small images")
                pa.default_memory_pool().release_unused()
            return self.groups[g]

    def cell(self, row: int) -> Optional[bytes]:
        g = bisect.bisect_right(self.starts, row) - 1
        return self.group(g)[row - self.starts[g]].as_py()


@functools.lru_cache(maxsize=16)
def _images(file: str, kind: str, stamp: tuple[int, int], column: str, field: Optional[str]):
    """The open image column of one file, shared by every row (and thread) that reads it."""
    return (_ArrowImages if kind == "arrow" else _ParquetImages)(file, stamp, column, field)


@dataclass(frozen=True, slots=True)
class TableRow:
    """One row's image bytes in a parquet or arrow file (``stamp``: the file's size and mtime when listed)."""

    file: str
    kind: str
    column: str
    field: Optional[str]
    row: int
    stamp: tuple[int, int]
    id: str

    def read_bytes(self) -> bytes:
        return _images(self.file, self.kind, self.stamp, self.column, self.field).cell(self.row) or b""

    def __str__(self) -> str:
        return self.id


# --------------------------------------------------------------------------- listing


def _read_columns(file: Path, kind: str, columns: list[str]) -> pa.Table:
    if kind == "arrow":
        return _arrow_table(str(file), file_stamp(file)).select(columns)
    return pq.read_table(file, columns=columns)


def _scalar_columns(schema: pa.Schema, skip: set[str]) -> list[str]:
    """Extra columns carried into the samples table: plain values only (no nested or binary data)."""
    return [f.name for f in schema if f.name not in skip and not pa.types.is_nested(f.type)
            and not pa.types.is_binary(f.type) and not pa.types.is_large_binary(f.type)]


def scan_table_files(files: list[Path], root: Path, name: str, *, info_file: Optional[Path] = None,
                     split: Optional[str] = None, splits: tuple[str, ...] = ()) -> Scan:
    """List the rows of one or more parquet / arrow files (one split): ids ``<file>#<row>`` (0-based row)."""
    frames, refs = [], []
    for file in files:
        kind = TABLE_SUFFIXES[file.suffix.lower()]
        schema = _schema(file)
        column, field = _image_field(schema)
        label = _label_column(schema)
        extras = _scalar_columns(schema, {column, label})
        table = _read_columns(file, kind, [label, *extras])
        frame = table.to_pandas()
        names = _class_names(schema, label, info_file)
        if names is not None:
            codes = frame[label]
            valid = codes.notna() & codes.between(0, len(names) - 1)
            frame[label] = pd.Series(np.asarray(names, dtype=object)[codes.where(valid, 0).astype(np.int64)],
                                     index=frame.index).where(valid, None)
        stamp = file_stamp(file)
        head = member_id(file, root, "")
        ids = [f"{head}{row}" for row in range(len(frame))]
        refs += [TableRow(str(file), kind, column, field, row, stamp, i) for row, i in enumerate(ids)]
        frame = frame.rename(columns={label: "label"})
        frame.insert(0, "path", ids)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return Scan(frame=frame, refs=refs, root=root, name=name, split=split, splits=splits)


def _split_of(file: Path, base: Path) -> Optional[str]:
    """The split a parquet file belongs to: a folder named like one, or a file name ``train-00000-of-...``."""
    for part in file.relative_to(base).parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return part.lower()
    head = file.stem.split("-")[0].split(".")[0].lower()
    return head if head in SPLIT_NAMES else None


def _pick_split(available: list[str], split: Optional[str], where: Path) -> Optional[str]:
    if not available:
        if split is not None:
            raise ValueError(f"{where}: has no splits, so --split {split!r} does not apply")
        return None
    if split is None:
        return next((s for s in SPLIT_NAMES if s in available), sorted(available)[0])
    if split not in available:
        raise ValueError(f"{where}: no split {split!r}; it has {', '.join(sorted(available))}")
    return split


def order_splits(names) -> tuple[str, ...]:
    """Known split names in their usual order (train, validation, test), others after them."""
    names = set(names)
    return tuple([s for s in SPLIT_NAMES if s in names] + sorted(names - set(SPLIT_NAMES)))


def is_hf_disk_folder(path: Path) -> bool:
    """A ``datasets`` ``save_to_disk`` folder: one Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def scan_hf_disk(path: Path, split: Optional[str] = None) -> Scan:
    """A ``save_to_disk`` folder read in place (its arrow files memory-mapped); a DatasetDict by split
    (ids relative to the DatasetDict's folder: ``train/data-00000-of-00001.arrow#12``)."""
    folder, name, splits = path, path.name, ()
    if (path / "dataset_dict.json").is_file():
        available = list(json.loads((path / "dataset_dict.json").read_text()).get("splits") or [])
        split = _pick_split(available, split, path)
        folder, name, splits = path / split, f"{path.name}:{split}", order_splits(available)
    elif split is not None:
        raise ValueError(f"{path}: a single saved dataset has no splits, so --split {split!r} does not apply")
    state = json.loads((folder / "state.json").read_text())
    files = [folder / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise ValueError(f"{folder}/state.json lists no data files")
    return scan_table_files(files, path, name, info_file=folder / "dataset_info.json", split=split, splits=splits)


def table_files(path: Path) -> list[Path]:
    """Parquet / arrow files of a folder (recursively, sorted), or the one file named."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def scan_tables(path: Path, split: Optional[str] = None) -> Scan:
    """A parquet / arrow file, or a folder of them (an HF parquet export: one split chosen by file or folder name)."""
    if is_hf_disk_folder(path):
        return scan_hf_disk(path, split)
    files = table_files(path)
    if not files:
        raise ValueError(f"{path}: no .parquet or .arrow files")
    if path.is_file():
        if split is not None:
            raise ValueError(f"{path}: one file has no splits, so --split {split!r} does not apply")
        return scan_table_files(files, path.parent, path.stem)
    by_split: dict[Optional[str], list[Path]] = {}
    for file in files:
        by_split.setdefault(_split_of(file, path), []).append(file)
    available = [s for s in by_split if s is not None]
    chosen = _pick_split(available, split, path) if len(by_split) > 1 or split is not None else next(iter(by_split))
    return scan_table_files(by_split[chosen], path, f"{path.name}:{chosen}" if chosen else path.name,
                            split=chosen, splits=order_splits(available))
