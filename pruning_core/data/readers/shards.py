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

import io
import json
import mmap
import os
import re
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from pruning_core.data.readers.base import (
    KIND_NO_IMAGE,
    KIND_TRUNCATED,
    KIND_UNREADABLE_CONTAINER,
    ID_SEPARATOR,
    ContainerProblem,
    Scan,
    file_stamp,
)

SHARD_SUFFIXES = (".tar",)
IMAGE_MEMBERS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm"})
LABEL_MEMBERS = ("cls", "json", "txt")
"""Where a label is read from, in order of preference (one source per dataset)."""
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


OPEN_SHARDS = 64
"""Shards kept open for reading (an open file is what a thousand ``pread`` calls share)."""
_open_shards: OrderedDict[tuple[str, tuple[int, int]], io.FileIO] = OrderedDict()
_open_lock = threading.Lock()


def _shard_handle(file: str, stamp: tuple[int, int]) -> io.FileIO:
    """The shard open for reading, shared by threads (``pread`` has no file position to race on).

    Keyed by the file's (size, mtime) when listed, so a rewritten shard is opened again; a handle pushed
    out of the cache is closed when the last reader holding it lets go."""
    key = (file, stamp)
    with _open_lock:
        handle = _open_shards.get(key)
        if handle is None:
            handle = _open_shards[key] = io.FileIO(file, "r")
            while len(_open_shards) > OPEN_SHARDS:
                _open_shards.popitem(last=False)
        else:
            _open_shards.move_to_end(key)
        return handle


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member's bytes inside a shard, read with one ``pread`` at its data offset."""

    file: str
    offset: int
    size: int
    stamp: tuple[int, int]
    id: str

    def read_bytes(self) -> bytes:
        handle = _shard_handle(self.file, self.stamp)
        data = os.pread(handle.fileno(), self.size, self.offset)
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
    """A ``.tar`` file or a brace pattern of them (a folder of shards is told apart from an image folder
    by :func:`pruning_core.data.readers.detect_format`)."""
    if _BRACES.search(source) and source.endswith(SHARD_SUFFIXES):
        return True
    path = Path(source).expanduser()
    return path.is_file() and path.suffix.lower() in SHARD_SUFFIXES


def holds_shards(folder: Path) -> bool:
    """``.tar`` files directly in the folder."""
    return any(p.suffix.lower() in SHARD_SUFFIXES for p in folder.iterdir() if p.is_file())


def shard_files(source: str) -> tuple[list[Path], Path]:
    """The shards a source names, in order, and the dataset root their ids are relative to."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES)
        return files, path
    files = expand_shards(source)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: shard not found{more}")
    return files, files[0].parent


def _split_key(name: str) -> tuple[str, str]:
    """``a/b/0001.seg.jpg`` -> (``a/b/0001``, ``seg.jpg``): WebDataset's key and extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


Members = list[tuple[str, str, int, int]]
"""(key, ext, data offset, size) of a shard's regular members, in order."""


_BLOCK = 512
_FILE_TYPES = frozenset(b"0\x007")
"""ustar type flags of regular files (``\\0``: old tar, ``7``: contiguous)."""
_SKIPPED_TYPES = frozenset(b"123456gK")
"""Links, devices, folders, FIFOs, PAX global headers, GNU long link names: no sample data."""


def _pax_records(data: bytes) -> dict[str, str]:
    """A PAX extended header's ``<length> <key>=<value>\\n`` records (``path`` and ``size`` are the ones used)."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _fast_members(view: memoryview) -> Optional[tuple[list[tuple[str, int, int]], int]]:
    """(name, data offset, size) of each regular member, parsed from the headers of the mapped shard (ustar,
    PAX extended headers as ``webdataset``'s TarWriter writes them, GNU long names), and where the listing
    ended; None when a header needs tarfile (an unknown type, a bad checksum: it says what is wrong)."""
    members: list[tuple[str, int, int]] = []
    offset, end = 0, len(view)
    pending: dict[str, str] = {}
    while offset + _BLOCK <= end:
        header = bytes(view[offset:offset + _BLOCK])
        if header == bytes(_BLOCK):
            return members, offset
        kind = header[156]
        try:
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
            checksum = int(header[148:156].strip(b"\0 ") or b"0", 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):
            return None
        data_at, offset = offset + _BLOCK, offset + _BLOCK + -(-size // _BLOCK) * _BLOCK
        if kind == ord("x"):
            try:
                pending.update(_pax_records(bytes(view[data_at:data_at + size])))
            except ValueError:
                return None
        elif kind == ord("L"):
            pending["path"] = bytes(view[data_at:data_at + size]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind in _FILE_TYPES:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            ustar = header[257:262] == b"ustar"
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if ustar else ""
            name = pending.get("path") or (f"{prefix}/{name}" if prefix else name)
            if "size" in pending:
                size = int(pending["size"])
                offset = data_at + -(-size // _BLOCK) * _BLOCK
            members.append((name, data_at, size))
            pending = {}
        elif kind in _SKIPPED_TYPES:
            pending = {}
        else:
            return None
    return members, offset


def _tarfile_members(file: Path) -> tuple[list[tuple[str, int, int]], int, Optional[Exception]]:
    """The same listing through tarfile (every header kind), and the error that stopped it, if any."""
    members: list[tuple[str, int, int]] = []
    try:
        with tarfile.open(file, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    members.append((info.name, info.offset_data, info.size))
            return members, tar.offset, None
    except (tarfile.ReadError, EOFError) as exc:
        return members, -1, exc


def _list_members(file: Path, rel: str) -> tuple[Members, Optional[ContainerProblem]]:
    """(key, ext, data offset, size) of each regular member, and the problem that cut the listing short.

    The shard is mapped in memory while its headers are parsed (read in place), then unmapped."""
    try:
        with open(file, "rb") as handle:
            if not os.fstat(handle.fileno()).st_size:
                return [], ContainerProblem(rel, "empty shard (0 bytes)", KIND_UNREADABLE_CONTAINER)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                with memoryview(mapped) as view:
                    return _members_of(file, rel, view)
    except OSError as exc:
        return [], ContainerProblem(rel, f"cannot read shard ({exc.strerror or exc})", KIND_UNREADABLE_CONTAINER)


def _members_of(file: Path, rel: str, view: memoryview) -> tuple[Members, Optional[ContainerProblem]]:
    """:func:`_list_members` on the mapped shard."""
    fast = _fast_members(view)
    error = None
    if fast is None:
        listed, end, error = _tarfile_members(file)
    else:
        listed, end = fast
    members = [(*_split_key(name), offset, size) for name, offset, size in listed]
    if error is not None and not members:
        return [], ContainerProblem(rel, f"not a readable tar shard ({error})", KIND_UNREADABLE_CONTAINER)
    size = len(view)
    if members and members[-1][2] + members[-1][3] > size:
        cut = f"it is {size:,} bytes but its last member needs {members[-1][2] + members[-1][3]:,}"
    elif error is not None:
        cut = f"the listing stops after {len(members):,} members ({error})"
    elif end < 0 or end + 2 * _BLOCK > size or bytes(view[end:end + 2 * _BLOCK]) != bytes(2 * _BLOCK):
        cut = f"it ends after {len(members):,} members without the end-of-archive blocks"
    else:
        return members, None
    return members, ContainerProblem(rel, f"truncated shard: {cut}; the complete members before the cut are kept",
                                     KIND_TRUNCATED)


def _small_text(fd: int, offset: int, size: int) -> str:
    return os.pread(fd, size, offset).decode("utf-8", "replace").strip()


def _label_and_caption(fd: int, parts: dict[str, tuple[int, int]],
                       label_from: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The sample's label (from ``label_from``) and caption (a ``.txt`` or json ``caption`` that is not the label)."""
    label = caption = None
    meta: dict = {}
    if "json" in parts:
        try:
            loaded = json.loads(_small_text(fd, *parts["json"]) or "{}")
            meta = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            meta = {}
    if label_from == "cls" and "cls" in parts:
        label = _small_text(fd, *parts["cls"])
    elif label_from == "json":
        value = meta.get("label", meta.get("cls"))
        label = None if value is None else str(value)
    elif label_from == "txt" and "txt" in parts:
        label = _small_text(fd, *parts["txt"])
    if label_from != "txt" and "txt" in parts:
        caption = _small_text(fd, *parts["txt"])
    elif "caption" in meta:
        caption = str(meta["caption"])
    return label, caption


def scan_shards(source: str) -> Scan:
    """List every shard of ``source``: one row per sample image (id ``<shard>#<key>``), its label and caption."""
    files, root = shard_files(source)
    if not files:
        raise FileNotFoundError(f"{source}: no .tar shards found")
    for file in files:
        if file.name.lower().endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")):
            raise ValueError(f"{file}: compressed shards cannot be read in place; use uncompressed .tar shards")
        if file.suffix.lower() != ".tar":
            raise ValueError(f"{file}: not a .tar shard")
    problems: list[ContainerProblem] = []
    listed = []
    for file in files:
        rel = os.path.relpath(file, root).replace(os.sep, "/")
        members, problem = _list_members(file, rel)
        if problem is not None:
            problems.append(problem)
        listed.append((file, rel, members))
    exts = {ext for *_, members in listed for _, ext, _, _ in members}
    label_from = next((e for e in LABEL_MEMBERS if e in exts), None)
    ids, labels, captions, refs = [], [], [], []
    for file, rel, members in listed:
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
                problems.append(ContainerProblem(f"{rel}{ID_SEPARATOR}{key}", "sample has no image member "
                                                 f"(members: {', '.join(sorted(samples[key]))})", KIND_NO_IMAGE))
        fd = os.open(file, os.O_RDONLY)
        stamp = file_stamp(file)
        try:
            for key, _ext, offset, size in images:
                sample_id = f"{rel}{ID_SEPARATOR}{key}"
                label, caption = _label_and_caption(fd, samples.get(key, {}), label_from)
                ids.append(sample_id)
                labels.append(label)
                captions.append(caption)
                refs.append(TarMember(str(file), offset, size, stamp, sample_id))
        finally:
            os.close(fd)
    frame = pd.DataFrame({"path": ids, "label": labels})
    if any(c is not None for c in captions):
        frame["caption"] = captions
    name = root.name if Path(source).expanduser().is_dir() else _BRACES.sub("", Path(source).stem).rstrip("-_")
    return Scan(frame=frame, refs=refs, root=root, name=name or root.name, problems=problems)
