"""WebDataset tar shards, read in place: the tar headers are listed once, each image is one ``pread``.

A shard holds samples as consecutive members sharing a *key* (the member name up to the first dot of its
file name, folders included: ``a/b/0001.jpg`` and ``a/b/0001.cls`` are sample ``a/b/0001``).  The image is
the ``.jpg``/``.jpeg``/``.png``/``.webp``/... member; the label comes from ``.cls`` (class index or name),
else a ``.json`` member's ``label`` field, else ``.txt``; whichever of ``.json`` ``caption`` / ``.txt`` is not
the label is the caption.  The source of the label is decided once per dataset (the first of those
extensions any sample has), so one dataset never mixes them.

Why tarfile rather than the ``webdataset`` library: webdataset streams samples (an iterator over the
shards, meant for training); a dataset audit needs random access by id (thumbnails, review, CLIP batches
in any order) and the byte offset of every member, which ``tarfile`` gives from the headers alone.
Compressed shards (``.tar.gz``) cannot be read at an offset and are refused with that reason.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from pruning_core.data.readers.base import (
    KIND_NO_IMAGE,
    KIND_TRUNCATED,
    KIND_UNREADABLE_CONTAINER,
    ContainerProblem,
    Scan,
    member_id,
)

SHARD_SUFFIXES = (".tar",)
IMAGE_MEMBERS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm"})
LABEL_MEMBERS = ("cls", "json", "txt")
"""Where a label is read from, in order of preference (one source per dataset)."""
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member's bytes inside a shard, read with one ``pread`` at its data offset."""

    file: str
    offset: int
    size: int
    id: str

    def read_bytes(self) -> bytes:
        fd = os.open(self.file, os.O_RDONLY)
        try:
            data = os.pread(fd, self.size, self.offset)
        finally:
            os.close(fd)
        if len(data) < self.size:
            raise OSError(f"the shard ends inside this member ({len(data):,} of {self.size:,} bytes)")
        return data

    def __str__(self) -> str:
        return self.id


def expand_shards(pattern: str) -> list[Path]:
    """``name-{000000..000009}.tar`` -> the ten names (zero padding kept, several brace groups allowed)."""
    match = _BRACES.search(pattern)
    if match is None:
        return [Path(pattern).expanduser()]
    lo, hi = match.group(1), match.group(2)
    width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
    if int(hi) < int(lo):
        raise ValueError(f"{pattern}: the range {{{lo}..{hi}}} counts down")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [p for i in range(int(lo), int(hi) + 1) for p in expand_shards(f"{head}{i:0{width}d}{tail}")]


def is_shard_source(source: str) -> bool:
    """A ``.tar`` file, a brace pattern of them, or a folder whose files are ``.tar`` shards."""
    if _BRACES.search(source) and source.endswith(SHARD_SUFFIXES):
        return True
    path = Path(source).expanduser()
    if path.is_file():
        return path.suffix.lower() in SHARD_SUFFIXES
    return path.is_dir() and any(p.suffix.lower() in SHARD_SUFFIXES for p in path.iterdir() if p.is_file())


def shard_files(source: str) -> tuple[list[Path], Path]:
    """The shards a source names, in order, and the dataset root their ids are relative to."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES)
        return files, path
    files = expand_shards(source)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: shard not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return files, files[0].parent


def _split_key(name: str) -> tuple[str, str]:
    """``a/b/0001.seg.jpg`` -> (``a/b/0001``, ``seg.jpg``): WebDataset's key and extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _list_members(file: Path, rel: str) -> tuple[list[tuple[str, str, int, int]], Optional[ContainerProblem]]:
    """(key, ext, data offset, size) of each regular member, and the problem that stopped the listing."""
    members: list[tuple[str, str, int, int]] = []
    file_size = file.stat().st_size
    try:
        with tarfile.open(file, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = _split_key(info.name)
                members.append((key, ext, info.offset_data, info.size))
    except (tarfile.ReadError, EOFError) as exc:
        if not members:
            return [], ContainerProblem(rel, f"not a readable tar shard ({exc})", KIND_UNREADABLE_CONTAINER)
        return members, ContainerProblem(rel, f"truncated shard: the listing stops after {len(members):,} members "
                                              f"({exc}); the samples before that point are kept", KIND_TRUNCATED)
    except OSError as exc:
        return [], ContainerProblem(rel, f"cannot read shard ({exc.strerror or exc})", KIND_UNREADABLE_CONTAINER)
    if members and members[-1][2] + members[-1][3] > file_size:
        return members, ContainerProblem(rel, f"truncated shard: it is {file_size:,} bytes but its last member "
                                              f"needs {members[-1][2] + members[-1][3]:,}", KIND_TRUNCATED)
    return members, None


def _small_text(file: Path, offset: int, size: int) -> str:
    with open(file, "rb") as handle:
        handle.seek(offset)
        return handle.read(size).decode("utf-8", "replace").strip()


def _label_and_caption(file: Path, parts: dict[str, tuple[int, int]], label_from: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The sample's label (from ``label_from``) and caption (a ``.txt`` or json ``caption`` that is not the label)."""
    label = caption = None
    meta: dict = {}
    if "json" in parts:
        try:
            loaded = json.loads(_small_text(file, *parts["json"]) or "{}")
            meta = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            meta = {}
    if label_from == "cls" and "cls" in parts:
        label = _small_text(file, *parts["cls"])
    elif label_from == "json":
        value = meta.get("label", meta.get("cls"))
        label = None if value is None else str(value)
    elif label_from == "txt" and "txt" in parts:
        label = _small_text(file, *parts["txt"])
    if label_from != "txt" and "txt" in parts:
        caption = _small_text(file, *parts["txt"])
    elif "caption" in meta:
        caption = str(meta["caption"])
    return label, caption


def scan_shards(source: str) -> Scan:
    """List every shard of ``source``: one row per sample image (id ``<shard>#<key>``), its label and caption."""
    files, root = shard_files(source)
    if not files:
        raise FileNotFoundError(f"{source}: no .tar shards found")
    for file in files:
        if file.suffix.lower() != ".tar":
            raise ValueError(f"{file}: compressed shards cannot be read in place; use uncompressed .tar shards")
    problems: list[ContainerProblem] = []
    listed = []
    for file in files:
        rel = os.path.relpath(file, root).replace(os.sep, "/")
        members, problem = _list_members(file, rel)
        if problem is not None:
            problems.append(problem)
        listed.append((file, members))
    exts = {ext for _, members in listed for _, ext, _, _ in members}
    label_from = next((e for e in LABEL_MEMBERS if e in exts), None)
    ids, labels, captions, refs = [], [], [], []
    for file, members in listed:
        samples: dict[str, dict[str, tuple[int, int]]] = {}
        images: list[tuple[str, str, int, int]] = []
        for key, ext, offset, size in members:
            if ext in IMAGE_MEMBERS:
                images.append((key, ext, offset, size))
            else:
                samples.setdefault(key, {}).setdefault(ext, (offset, size))
        with_image = {key for key, *_ in images}
        for key in samples:
            if key not in with_image:
                problems.append(ContainerProblem(member_id(file, root, key), "sample has no image member "
                                                 f"(members: {', '.join(sorted(samples[key]))})", KIND_NO_IMAGE))
        for key, _ext, offset, size in images:
            sample_id = member_id(file, root, key)
            label, caption = _label_and_caption(file, samples.get(key, {}), label_from)
            ids.append(sample_id)
            labels.append(label)
            captions.append(caption)
            refs.append(TarMember(str(file), offset, size, sample_id))
    frame = pd.DataFrame({"path": ids, "label": labels})
    if any(c is not None for c in captions):
        frame["caption"] = captions
    name = root.name if Path(source).expanduser().is_dir() else _BRACES.sub("", Path(source).stem).rstrip("-_")
    return Scan(frame=frame, refs=refs, root=root, name=name or root.name, problems=problems)
