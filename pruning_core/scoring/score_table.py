"""A score table: the dataset's samples with one column per score, and what each score means.

Every score producer (CLIP, dynamics, cleanlab, AdaPruner) returns one and the pipeline merges
them; the CLI and the pages read and write it.  It lives beside :mod:`pruning_core.scoring.score_info`
(the sidecar it saves), below every producer, so a producer never imports the pipeline for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from cache.store import atomic_write_bytes
from pruning_core.data.datasets import ISSUE_COLUMNS, Dataset
from pruning_core.export.subset import table_bytes
from pruning_core.runtime.safety import check_outputs, has_columns
from pruning_core.scoring.score_info import ScoreInfo, read_sidecar, read_sidecar_settings, write_sidecar

SCORES_SUFFIX = ".parquet"
DATASET_SETTING = "dataset"
"""The settings entry that names the scored dataset (its fingerprint), next to the score families."""


@dataclass
class ScoreTable:
    """Samples with their score columns, plus what each score means (the sidecar)."""

    frame: pd.DataFrame
    infos: dict[str, ScoreInfo]
    notes: list[str] = field(default_factory=list)
    """What the user should know about how these scores were made (e.g. a budget cut a step short)."""
    settings: dict = field(default_factory=dict)
    """How each score family was made, by family (``{"dynamics": {...}}``): kept in the sidecar."""

    @staticmethod
    def output_paths(path: Path) -> dict[str, Path]:
        """Every file ``prunescope score --out PATH`` writes, by role; refuses a name that is not ``.parquet``.

        The sidecar (``.json``) and the issues list (``.issues.csv``) sit next to the table under
        its stem, so only a ``.parquet`` name guarantees the three never land on one file.
        """
        path = Path(path)
        if path.suffix.lower() != SCORES_SUFFIX:
            raise ValueError(f"{path}: a score table is written as parquet; give --out a name ending in "
                             f"{SCORES_SUFFIX} (its sidecar .json and .issues.csv go next to it)")
        outputs = {"scores": path, "sidecar": path.with_suffix(".json"), "issues": path.with_suffix(".issues.csv")}
        check_outputs(outputs)
        return outputs

    @staticmethod
    def recognisers() -> dict[str, Callable[[Path], bool]]:
        """For each of :meth:`output_paths`' roles, whether an existing file is an earlier output of ours
        (a table with our sidecar beside it, a sidecar, an issues table), which a rerun may replace."""
        def is_sidecar(path: Path) -> bool:
            try:
                read_sidecar(path)
            except (ValueError, OSError):
                return False
            return True

        return {"scores": lambda p: is_sidecar(p.with_suffix(".json")), "sidecar": is_sidecar,
                "issues": has_columns(ISSUE_COLUMNS)}

    def save(self, path: Path) -> Path:
        """Write ``path`` (parquet) and its ``.json`` sidecar atomically; returns the sidecar path."""
        outputs = self.output_paths(path)
        outputs["scores"].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(outputs["scores"], table_bytes(self.frame, "parquet"))
        write_sidecar(outputs["sidecar"], self.infos, self.settings)
        return outputs["sidecar"]

    @classmethod
    def load(cls, path: Path) -> "ScoreTable":
        """A table written by :meth:`save` (``.csv`` tables of older versions load too); bad files raise
        ``ValueError``/``FileNotFoundError`` naming the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"score table not found: {path}")
        try:
            frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
        except Exception as exc:  # pyarrow and the csv parser raise many types for one cause: a damaged file
            raise ValueError(f"{path}: not a readable score table ({type(exc).__name__}: {exc})") from None
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: the score table has no {' or '.join(repr(c) for c in missing)} column "
                             "(write it with 'prunescope score')")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path} has no sidecar {sidecar.name}: it says which direction each score points")
        infos = {name: info for name, info in read_sidecar(sidecar).items() if name in frame}
        undescribed = [c for c in frame.columns if "." in str(c) and pd.api.types.is_numeric_dtype(frame[c])]
        if not infos and undescribed:
            shown = ", ".join(undescribed[:4]) + (", ..." if len(undescribed) > 4 else "")
            raise ValueError(f"{sidecar}: the sidecar describes none of the {len(undescribed)} numeric "
                             f"<family>.<score> columns of {path.name} ({shown}); each needs an entry "
                             "{description, suspicious} "
                             "(rewrite it with 'prunescope score')")
        notes = [_numeric_column(frame, name, path) for name in infos]
        return cls(frame, infos, notes=[n for n in notes if n], settings=read_sidecar_settings(sidecar))

    def merged(self, other: "ScoreTable") -> "ScoreTable":
        new_cols = [c for c in other.frame.columns if c not in self.frame.columns]
        frame = pd.concat([self.frame, other.frame[new_cols].set_axis(self.frame.index)], axis=1)
        return ScoreTable(frame, {**self.infos, **other.infos}, [*self.notes, *other.notes],
                          {**self.settings, **other.settings})


def _numeric_column(frame: pd.DataFrame, name: str, path: Path) -> str | None:
    """Make score column ``name`` numeric in place: numbers written as text are converted (the note
    returned says so); any other text is a ``ValueError`` naming the file, column, row and value."""
    column = frame[name]
    if pd.api.types.is_numeric_dtype(column):
        return None
    numbers = pd.to_numeric(column, errors="coerce")
    bad = column.notna().to_numpy() & numbers.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(f"{path}: score column {name!r} holds {int(bad.sum()):,} values that are not numbers "
                         f"(row {row + 1}: {column.iat[row]!r}); a score column must be numeric")
    frame[name] = numbers.astype("float64")
    return f"{path}: score column {name!r} held numbers written as text; they were read as numbers"


def base_table(dataset: Dataset) -> ScoreTable:
    """The sample columns every score table starts from (path, label, caption, extras).

    Its settings name the dataset (``settings["dataset"]["fingerprint"]``), so review decisions
    applied to the table later can be checked against the data they were made on.
    """
    return ScoreTable(dataset.samples.copy(), {},
                      settings={DATASET_SETTING: {"fingerprint": dataset.fingerprint, "name": dataset.name}})


def score_columns(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> list[str]:
    """Numeric score columns that have a direction: what UIs offer for colouring and weighting."""
    return [c for c in frame.columns if c in infos and pd.api.types.is_numeric_dtype(frame[c])]
