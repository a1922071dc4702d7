"""What every container reader hands the dataset loader: one row per sample, where its bytes are, problems.

A reader lists a container (parquet / arrow table, tar shards) without decoding anything: the loader
(:func:`pruning_core.data.datasets.from_container`) then validates labels, ids and image bytes exactly
as it validates folders.  Readers never import the loader (it imports them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

ID_SEPARATOR = "#"
"""Between a container file's path and the member inside it: ``shards/000003.tar#key``, ``train.parquet#12``."""

# Kinds of container-level problems (the loader's summary groups issues by kind).
KIND_TRUNCATED = "truncated shard"
KIND_UNREADABLE_CONTAINER = "unreadable container"
KIND_NO_IMAGE = "no image member"


@dataclass(frozen=True)
class LoadedBlob:
    """Bytes already read (the validator reads each member once, to hash and to check it)."""

    id: str
    data: bytes

    def read_bytes(self) -> bytes:
        return self.data

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class ContainerProblem:
    """A problem with a whole file or with a sample that has no row (a key without an image, a cut shard)."""

    path: str
    """The container file (relative to the dataset root) or the sample id it concerns."""
    reason: str
    kind: str
    severity: str = "error"


@dataclass
class Scan:
    """A container listed: ``frame`` has ``path`` (the sample id), ``label`` (raw), optional ``caption`` and
    extra columns; ``refs[i]`` reads row i's image bytes in place."""

    frame: pd.DataFrame
    refs: list
    root: Path
    name: str
    problems: list[ContainerProblem] = field(default_factory=list)
    split: Optional[str] = None
    splits: tuple[str, ...] = ()


def member_id(file: os.PathLike | str, root: Path, member: object) -> str:
    """``<file relative to root>#<member>``: the stable id every table, decision and manifest uses."""
    rel = os.path.relpath(os.path.abspath(file), os.path.abspath(root)).replace(os.sep, "/")
    return f"{rel}{ID_SEPARATOR}{member}"


def file_stamp(path: os.PathLike | str) -> tuple[int, int]:
    """(size, mtime ns): a cached open container is reused only while its file is unchanged."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
