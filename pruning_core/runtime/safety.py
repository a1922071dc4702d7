"""What keeps PruneScope safe on a shared server: one place for every check that guards the user's data.

- **Network**: the app listens on the loopback interface unless the user explicitly opts in to
  another address (``DEFAULT_ADDRESS``, :func:`is_loopback`).
- **Workspace boundary**: the app reads datasets and writes exports only under the workspace roots
  (``$PRUNESCOPE_ROOTS``, default: the home folder and the current directory), so a browser user
  cannot list ``/etc`` or write into another user's folder (:func:`check_in_workspace`).
- **Outputs never collide**: no command writes two of its outputs to one file or overwrites one of
  its own inputs (:func:`check_outputs`), nor replaces a file PruneScope did not write unless told
  to (:func:`check_replaceable`).
- **Dataset roots**: a dataset is never read from ``/`` or a system folder, whatever symlink leads
  there (:func:`check_dataset_root`).
- **CSV safety**: text cells that a spreadsheet would run as a formula are neutralised in CSV
  exports, OWASP's recipe (:func:`csv_safe`); parquet and JSON keep the raw values.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import pandas as pd

DEFAULT_ADDRESS = "127.0.0.1"
"""Where ``prunescope app`` listens unless told otherwise (``.streamlit/config.toml`` says the same)."""

ROOTS_ENV = "PRUNESCOPE_ROOTS"
"""Workspace roots for the app, ``os.pathsep``-separated (``/data/a:/home/me``)."""


class UnsafeRequest(ValueError):
    """A request refused to protect the user's data: a path outside the workspace, a colliding output."""


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


# ----------------------------------------------------------------------------- workspace boundary

def workspace_roots(env: Optional[Mapping[str, str]] = None) -> list[Path]:
    """The folders the app may read datasets from and write exports to (resolved, symlinks followed)."""
    env = os.environ if env is None else env
    raw = env.get(ROOTS_ENV, "")
    parts = [p for p in raw.split(os.pathsep) if p.strip()] if raw.strip() else [str(Path.home()), os.getcwd()]
    return [Path(p).expanduser().resolve() for p in parts]


def check_in_workspace(path: os.PathLike | str, what: str, roots: Optional[Sequence[Path]] = None) -> Path:
    """``path`` resolved (``..`` and symlinks followed); :class:`UnsafeRequest` when it leaves every root.

    ``what`` names the field in the message (``"dataset folder"``, ``"export folder"``).
    """
    roots = workspace_roots() if roots is None else roots
    resolved = Path(path).expanduser().resolve()
    if any(resolved == root or root in resolved.parents for root in roots):
        return resolved
    shown = ", ".join(str(r) for r in roots)
    raise UnsafeRequest(f"{what} {resolved} is outside the workspace ({shown}); "
                        f"set {ROOTS_ENV} to allow other folders")


# ----------------------------------------------------------------------------- outputs

def check_outputs(outputs: Mapping[str, os.PathLike | str], inputs: Iterable[os.PathLike | str] = ()) -> None:
    """Refuse two outputs on one file, or an output on an input: nothing computed before is overwritten.

    ``outputs`` maps what each file is (``"scores"``, ``"sidecar"``) to its path; files are compared
    after resolving symlinks and ``..``, so ``./s.parquet`` and ``s.parquet`` are one file.
    """
    seen: dict[str, str] = {}
    for role, path in outputs.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UnsafeRequest(f"{path}: the {role} and the {seen[real]} would be written to the same file; "
                                "choose another --out name")
        seen[real] = role
    for path in inputs:
        real = os.path.realpath(path)
        if real in seen:
            raise UnsafeRequest(f"{path} is an input of this command and would be overwritten by its "
                                f"{seen[real]}; write to another file")


def table_columns(path: Path) -> Optional[set[str]]:
    """The column names of a CSV, parquet or JSON-records table (header only), or None when it is not one."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                return set(next(csv.reader(fh), []))
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return set(pq.read_schema(path).names)
        if suffix == ".json":
            doc = json.loads(path.read_text())
            if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
                return set(doc[0]) if doc else set()
    except Exception:  # unreadable, not UTF-8, not a table: not one of ours
        return None
    return None


def has_columns(columns: Iterable[str]) -> Callable[[Path], bool]:
    """Recognises a table PruneScope wrote by the columns it always writes (an empty JSON list too)."""
    wanted = set(columns)

    def ours(path: Path) -> bool:
        found = table_columns(path)
        return found is not None and (wanted <= found or (found == set() and path.suffix.lower() == ".json"))
    return ours


def json_with_key(key: str) -> Callable[[Path], bool]:
    """Recognises a JSON document PruneScope wrote by a key it always holds (the manifest's version)."""
    def ours(path: Path) -> bool:
        try:
            doc = json.loads(path.read_text())
        except Exception:
            return False
        return isinstance(doc, dict) and key in doc
    return ours


def check_replaceable(outputs: Mapping[str, os.PathLike | str], ours: Mapping[str, Callable[[Path], bool]],
                      *, overwrite: bool = False) -> None:
    """Refuse to replace an existing file PruneScope did not write (a user's ``notes.csv``) unless ``overwrite``.

    ``ours`` recognises, by role, an earlier output of the same kind (its columns, its keys, a sidecar of
    ours beside it): rerunning a command over its own outputs stays one command.  An empty file holds
    nothing to lose; a folder is never replaced.
    """
    for role, raw in outputs.items():
        path = Path(raw)
        if path.is_dir():
            raise UnsafeRequest(f"{path}: the {role} would replace a folder; choose a file name")
        if overwrite or not path.exists() or path.stat().st_size == 0 or ours[role](path):
            continue
        raise UnsafeRequest(f"{path} exists and does not look like PruneScope's {role}; choose another name, or "
                            "pass --overwrite to replace it")


# ----------------------------------------------------------------------------- dataset roots

SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
                  "/run", "/sbin", "/sys", "/usr", "/var", "/snap", "/System", "/Library", "/private",
                  "/Applications", "/home", "/Users")
"""Folders that hold the system or every user's files: never a dataset root themselves (mount points such as
``/mnt`` may be one)."""

NEVER_INSIDE = ("/proc", "/sys", "/dev")
"""Pseudo file systems: nothing under them is a dataset."""


def check_dataset_root(path: os.PathLike | str, what: str = "dataset root", *, walked: bool = False) -> Path:
    """``path`` resolved (symlinks followed); :class:`UnsafeRequest` when it is ``/``, a system folder or
    inside ``/proc``, ``/sys`` or ``/dev``.  A ``walked`` root (an image folder, listed file by file) may
    not be the home folder either: walking one lists every file of the system or of the user.  A
    manifest's root is only where its relative paths start, so a manifest in the home folder is fine."""
    resolved = Path(path).expanduser().resolve()
    text = str(resolved)
    system = (resolved == Path(resolved.anchor) or text in SYSTEM_FOLDERS
              or (walked and resolved == Path.home().resolve())
              or any(text.startswith(root + "/") for root in NEVER_INSIDE))
    if system:
        via = "" if str(Path(path).expanduser().absolute()) == text else f" ({path} leads there)"
        kind = "the file system root, a system folder or the home folder" if walked else \
            "the file system root or a system folder"
        raise UnsafeRequest(f"{what} {text}{via} is {kind}, not a dataset; give the folder that holds the class "
                            "folders or the images")
    return resolved


# ----------------------------------------------------------------------------- CSV safety

CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection)."""


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells starting with a formula character get a leading ``'`` (OWASP's recipe).

    Only text (object / string) columns change: numbers are written as numbers and stay numbers.
    Used for every CSV PruneScope writes for people (CLI outputs, app downloads); parquet and JSON
    keep the raw values, so use them where labels must round-trip exactly.
    """
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
            continue
        risky = series.map(lambda v: isinstance(v, str) and v.startswith(CSV_FORMULA_PREFIXES)).astype(bool)
        if risky.any():
            out[col] = series.mask(risky, "'" + series[risky].astype(str))
    return out


CSV_QUOTING = csv.QUOTE_NONNUMERIC
"""Every text cell quoted: a carriage return inside a label stays in its cell (pandas and Python's csv
leave a bare CR unquoted, and spreadsheets then start a new row), and types are still inferred on reading."""
