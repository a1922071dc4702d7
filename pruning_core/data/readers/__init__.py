"""Datasets as teams keep them, read in place: which format a path holds, and the container readers.

``detect_format`` names the format of a path (``--format`` overrides it); the containers (parquet / arrow
tables, HF ``save_to_disk`` folders, WebDataset shards) are listed by :func:`scan`, and
:func:`pruning_core.data.datasets.load_dataset` validates what they list as it validates folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pruning_core.data.images import IMAGE_EXTENSIONS
from pruning_core.data.readers.base import Scan
from pruning_core.data.readers.shards import holds_shards, is_shard_source, scan_shards
from pruning_core.data.readers.tables import (
    SPLIT_NAMES,
    TABLE_SUFFIXES,
    has_image_bytes,
    is_hf_disk_folder,
    order_splits,
    scan_tables,
    table_files,
)

FORMATS = {
    "folder": "image folder (root/<class>/<image>)",
    "splits": "image folder with train/ val/ test/ subfolders (each root/<class>/<image>)",
    "manifest": "CSV / parquet manifest (path,label[,caption][,split])",
    "table": "parquet / arrow file(s) of image bytes + label (HF parquet export)",
    "hf-disk": "Hugging Face datasets folder written by save_to_disk",
    "webdataset": "WebDataset .tar shards (name-{000000..000009}.tar or their folder)",
}
"""Every format a dataset path may hold, with how it is described to people (CLI help, Dataset page)."""
CONTAINER_FORMATS = ("table", "hf-disk", "webdataset")
"""Formats whose images live inside files: samples are ids (``file#member``), read in place."""


def split_folders(path: Path) -> list[str]:
    """The split subfolders of a folder whose every subfolder is a split (train/, val/, test/), else []."""
    if not path.is_dir():
        return []
    subdirs = [e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    if subdirs and all(d.lower() in SPLIT_NAMES for d in subdirs):
        return list(order_splits(subdirs))
    return []


def _holds_images(folder: Path) -> bool:
    """A class folder: image files directly inside it."""
    return any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in os.scandir(folder) if e.is_file())


def detect_format(source: str) -> str:
    """The format a path holds, from its name and a look at its first level (no file is decoded)."""
    path = Path(source).expanduser()
    if is_shard_source(source):
        return "webdataset"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES and (suffix == ".arrow" or has_image_bytes(path)):
            return "table"
        return "manifest"
    if not path.is_dir():
        return "manifest" if path.suffix.lower() in (".csv", ".parquet", ".pq") else "folder"
    if is_hf_disk_folder(path):
        return "hf-disk"
    if split_folders(path):
        return "splits"
    classes = [Path(e.path) for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    if any(_holds_images(c) for c in classes[:50]):
        return "folder"
    if holds_shards(path):
        return "webdataset"
    if any(has_image_bytes(f) for f in table_files(path)[:1]):
        return "table"
    return "folder"


def scan(source: str, format: str, split: Optional[str] = None) -> Scan:
    """List a container dataset (one of :data:`CONTAINER_FORMATS`) without decoding an image."""
    if format == "webdataset":
        if split is not None:
            raise ValueError(f"{source}: WebDataset shards have no splits; name the shards of the split instead")
        return scan_shards(source)
    if format in ("table", "hf-disk"):
        return scan_tables(Path(source).expanduser(), split)
    raise ValueError(f"{source}: {format!r} is not a container format ({', '.join(CONTAINER_FORMATS)})")


__all__ = ["CONTAINER_FORMATS", "FORMATS", "Scan", "detect_format", "scan", "split_folders"]
