"""What each score column means and which direction is suspicious.

Every score producer returns its columns together with a :class:`ScoreInfo` per column;
the CLI writes them to the ``scores.json`` sidecar and the app reads them to orient
colour scales, review order and pruning weights without a hard-coded score list.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from cache.store import atomic_write_bytes

Direction = Literal["low", "high"]


@dataclass(frozen=True)
class ScoreInfo:
    """``suspicious`` says whether LOW or HIGH values mark a likely problem or hard sample."""

    name: str
    description: str
    suspicious: Direction

    def __post_init__(self) -> None:
        if "." not in self.name:
            raise ValueError(f"score column {self.name!r} must be named '<family>.<score>'")
        if self.suspicious not in ("low", "high"):
            raise ValueError(f"score {self.name!r}: suspicious must be 'low' or 'high'")


SETTINGS_KEY = "settings"
"""The sidecar's entry for how each score family was made (never a score name: those are ``family.score``)."""


def sidecar_bytes(infos: Mapping[str, ScoreInfo], settings: Optional[Mapping[str, Any]] = None) -> bytes:
    """The sidecar's JSON: what ``prunescope score`` writes and the Export page's bundle holds."""
    payload: dict[str, Any] = {name: {k: v for k, v in asdict(info).items() if k != "name"} for name, info in infos.items()}
    if settings:
        payload[SETTINGS_KEY] = dict(settings)
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode()


def write_sidecar(path: Path, infos: Mapping[str, ScoreInfo], settings: Optional[Mapping[str, Any]] = None) -> None:
    atomic_write_bytes(Path(path), sidecar_bytes(infos, settings))


_INFO_FIELDS = {"description", "suspicious"}


def _read_sidecar_json(path: Path) -> dict[str, Any]:
    """The sidecar as a dict, or ``ValueError`` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the score sidecar is not valid JSON ({exc}); rewrite it with 'prunescope score'") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the score sidecar must be a JSON object of score name -> "
                         f"{{description, suspicious}}, not a {type(raw).__name__}")
    for name, fields in raw.items():
        if name == SETTINGS_KEY:
            if not isinstance(fields, dict):
                raise ValueError(f"{path}: '{SETTINGS_KEY}' must be an object")
            continue
        if not isinstance(fields, dict) or set(fields) != _INFO_FIELDS:
            got = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
            raise ValueError(f"{path}: score {name!r} must have exactly the keys description and suspicious "
                             f"(got {got})")
    return raw


def read_sidecar(path: Path) -> dict[str, ScoreInfo]:
    raw = _read_sidecar_json(path)
    try:
        return {name: ScoreInfo(name=name, **fields) for name, fields in raw.items() if name != SETTINGS_KEY}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_sidecar_settings(path: Path) -> dict[str, Any]:
    """How each score family in the table was made (e.g. the planned proxy settings), by family."""
    return dict(_read_sidecar_json(path).get(SETTINGS_KEY) or {})
