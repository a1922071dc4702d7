"""What keeps PruneScope safe on a shared server: one place for every check that guards the user's data.

- **Network**: the app listens on the loopback interface unless the user explicitly opts in to
  another address (``DEFAULT_ADDRESS``, :func:`is_loopback`).
- **Workspace boundary**: the app reads datasets and writes exports only under the workspace roots
  (``$PRUNESCOPE_ROOTS``, default: the home folder and the current directory), so a browser user
  cannot list ``/etc`` or write into another user's folder (:func:`check_in_workspace`).
- **Outputs never collide**: no command writes two of its outputs to one file or overwrites one of
  its own inputs (:func:`check_outputs`).
- **CSV safety**: text cells that a spreadsheet would run as a formula are neutralised in CSV
  exports, OWASP's recipe (:func:`csv_safe`); parquet and JSON keep the raw values.
"""

from __future__ import annotations

import csv
import ipaddress
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

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
