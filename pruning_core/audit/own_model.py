"""Your own model's outputs: class probabilities (``--pred-probs``) and embeddings (``--features``).

A team that already trained a model on its data hands PruneScope what that model says instead of
letting it train a proxy or run CLIP: cleanlab's label issues and the suggested labels come from the
given probabilities, the k-NN outlier / duplicate / diversity scores (and a probe proxy) from the
given embeddings.  Those numbers are trusted for nothing else, so everything a mistake would
silently corrupt is checked here, each with one line naming the file:

* **shape**: one row per sample (N) and, for probabilities, one column per class (C, the sorted
  class names the dataset has);
* **values**: finite; probabilities non-negative with rows summing to 1 within
  :data:`ROW_SUM_TOLERANCE` (logits or unnormalised scores are refused, never renormalised
  silently);
* **row order**: a ``.parquet`` / ``.csv`` file that carries an ``id`` or ``path`` column is
  aligned on it (every sample exactly once); a ``.npy`` file or a manifest column has no key, so it
  must be in the dataset's order (``Dataset.samples``, the order ``prunescope validate`` lists);
* **where they came from**: the file's SHA-256 (or the column's values' hash) goes into the score
  table's settings, so the sidecar and the export manifest name exactly what was used.

Why out-of-sample: confident learning asks "would a model that never saw this label predict it?".
Probabilities from a model that trained on the very rows it predicts have memorised their labels
(a wrong label included), so they agree with the given labels almost everywhere and cleanlab finds
almost nothing.  Cross-validated (K-fold) predictions are what cleanlab's own docs require.
:func:`in_sample_warning` says so when the probabilities look in-sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.audit.projection import column_embeddings
from pruning_core.data.arrays import array_sha256, file_sha256, read_matrix

if TYPE_CHECKING:
    from pruning_core.data.datasets import Dataset

ROW_SUM_TOLERANCE = 1e-3
"""Largest ``|row sum - 1|`` accepted in given probabilities (float16/bf16 softmax outputs stay within it)."""
IN_SAMPLE_ACCURACY = 0.99
"""Agreement of ``argmax(pred_probs)`` with the given labels at or above which the probabilities look in-sample."""
IN_SAMPLE_CONFIDENCE = 0.98
"""Mean of the row maxima at or above which the probabilities look in-sample."""
KEY_COLUMNS = ("id", "path")
"""Columns a table file may carry to say which sample each row is (first one the dataset also has wins)."""
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class UserArray:
    """A user's (N, K) array in dataset order, and how the score table records where it came from."""

    values: np.ndarray
    source: dict
    """``{"what", "file" or "column", "sha256", "shape", "row_order"}``: goes to the table's settings."""


def _read_table_file(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pyarrow / pandas raise many types for a damaged file
        raise ValueError(f"{what} {path}: not a readable {path.suffix} table ({type(exc).__name__}: {exc})") from None


def _aligned(table: pd.DataFrame, samples: pd.DataFrame, path: Path, what: str) -> tuple[pd.DataFrame, str]:
    """``table`` rows reordered to ``samples`` on the first shared key column, or as given (dataset order)."""
    key = next((k for k in KEY_COLUMNS if k in table.columns and k in samples.columns), None)
    if key is None:
        if len(table) != len(samples):
            raise ValueError(f"{what} {path}: {len(table):,} rows for {len(samples):,} samples")
        return table.reset_index(drop=True), "dataset order (no id/path column)"
    keys = table[key].astype(str)
    if keys.duplicated().any():
        raise ValueError(f"{what} {path}: {key} {keys[keys.duplicated()].iloc[0]!r} appears more than once")
    wanted = samples[key].astype(str)
    position = pd.Index(keys).get_indexer(wanted)
    if (position < 0).any():
        missing = int((position < 0).sum())
        raise ValueError(f"{what} {path}: {missing:,} samples have no row (first: {key} "
                         f"{wanted[position < 0].iloc[0]!r})")
    if len(table) != len(samples):
        raise ValueError(f"{what} {path}: {len(table) - len(samples):,} rows name no sample of this dataset "
                         f"(by {key})")
    return table.iloc[position].drop(columns=[key]).reset_index(drop=True), f"aligned on {key}"


def _table_values(table: pd.DataFrame, classes: Optional[Sequence[str]], path: Path, what: str) -> np.ndarray:
    """The numbers of a table file: one column per class (named by the class) for probabilities,
    else one column of vectors or every numeric column."""
    table = table.drop(columns=[c for c in ("label",) if c in table.columns])
    if classes is not None:
        missing = [c for c in classes if c not in table.columns]
        if missing:
            raise ValueError(f"{what} {path}: no column for class {missing[0]!r} (one column per class, named "
                             f"by the class: {', '.join(map(str, classes[:5]))}{'...' if len(classes) > 5 else ''})")
        table = table[list(classes)]
    elif len(table.columns) == 1 and table[table.columns[0]].dtype == object:
        return column_embeddings(table, str(table.columns[0]))
    bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise ValueError(f"{what} {path}: column {bad[0]!r} is not numeric")
    return table.to_numpy(dtype=np.float64)


def named_file(spec: str) -> Optional[Path]:
    """The file ``spec`` names (resolved), or None when it can only be a manifest column.

    A ``.npy`` / ``.parquet`` / ``.csv`` name or an existing path is a file; the app checks that file
    against the workspace roots before anything reads it, so this is the one rule both use.
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npy" or path.suffix.lower() in TABLE_SUFFIXES or path.exists():
        return path.resolve()
    return None


def load_user_array(spec: str, samples: pd.DataFrame, what: str,
                    classes: Optional[Sequence[str]] = None) -> UserArray:
    """The (N, K) array ``spec`` names for these samples, in their order.

    ``spec`` is a ``.npy`` file (dataset order), a ``.parquet``/``.csv`` file (aligned on its
    ``id``/``path`` column when it has one; probabilities as one column per class in ``classes``),
    or the name of a manifest column of vectors.  ``what`` names the flag in messages.
    """
    path = named_file(spec)
    if path is not None:
        if not path.is_file():
            raise ValueError(f"{what} {path}: no such file")
        if path.suffix.lower() == ".npy":
            values = np.asarray(read_matrix(path, what), dtype=np.float64)
            if values.shape[0] != len(samples):
                raise ValueError(f"{what} {path}: {values.shape[0]:,} rows for {len(samples):,} samples")
            order = "dataset order (a .npy has no id column)"
        elif path.suffix.lower() in TABLE_SUFFIXES:
            table, order = _aligned(_read_table_file(path, what), samples, path, what)
            values = _table_values(table, classes, path, what)
        else:
            raise ValueError(f"{what} {path}: expected a .npy, .parquet or .csv file")
        source = {"file": str(path), "sha256": file_sha256(path)}
    elif spec in samples.columns:
        values = column_embeddings(samples, spec).astype(np.float64)
        order, source = "dataset order (a manifest column)", {"column": spec, "sha256": array_sha256(values)}
    else:
        raise ValueError(f"{what} {spec}: neither a file nor a column of the manifest")
    return UserArray(values, {"what": what, **source, "shape": list(values.shape), "row_order": order})


def _name(array: UserArray) -> str:
    return array.source.get("file") or f"manifest column {array.source.get('column')!r}"


def check_pred_probs(probs: UserArray, n_classes: int) -> UserArray:
    """``probs`` if it is a valid (N, C) probability matrix, else ValueError on one line naming it."""
    values, name, what = probs.values, _name(probs), probs.source["what"]
    if values.shape[1] != n_classes:
        raise ValueError(f"{what} {name}: {values.shape[1]} columns for {n_classes} classes (shape {values.shape})")
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(f"{what} {name}: {int((~finite).sum()):,} NaN/inf values (first in row {row})")
    if (values < 0).any():
        raise ValueError(f"{what} {name}: negative values (row {int(np.flatnonzero((values < 0).any(axis=1))[0])}): "
                         "give probabilities, not logits")
    off = np.abs(values.sum(axis=1) - 1.0)
    if (off > ROW_SUM_TOLERANCE).any():
        row = int(off.argmax())
        raise ValueError(f"{what} {name}: {int((off > ROW_SUM_TOLERANCE).sum()):,} rows do not sum to 1 within "
                         f"{ROW_SUM_TOLERANCE:g} (row {row} sums to {values[row].sum():.4g}): give softmax "
                         "probabilities, not logits or scores")
    return probs


def check_features(features: UserArray) -> UserArray:
    """``features`` if every row is a finite vector of at least 2 numbers, else ValueError naming it."""
    values, name, what = features.values, _name(features), features.source["what"]
    if values.shape[1] < 2:
        raise ValueError(f"{what} {name}: shape {values.shape}, expected (samples, dims >= 2)")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise ValueError(f"{what} {name}: {int((~finite).sum()):,} rows hold NaN/inf or are empty "
                         f"(first: row {int(np.flatnonzero(~finite)[0])})")
    if not np.linalg.norm(values, axis=1).all():
        raise ValueError(f"{what} {name}: row {int(np.flatnonzero(np.linalg.norm(values, axis=1) == 0)[0])} is "
                         "all zeros (no direction to compare by cosine)")
    return features


def in_sample_warning(labels: np.ndarray, probs: np.ndarray) -> Optional[str]:
    """A warning when ``probs`` look like a model's predictions on its own training rows, else None.

    Signs: ``argmax`` agrees with the given labels on at least :data:`IN_SAMPLE_ACCURACY` of rows, or
    the mean row maximum is at least :data:`IN_SAMPLE_CONFIDENCE`.  Either is possible out-of-sample
    on very clean, easy data, so it is a warning, not a refusal.
    """
    accuracy = float((probs.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
    confidence = float(probs.max(axis=1).mean()) if len(labels) else 0.0
    if accuracy < IN_SAMPLE_ACCURACY and confidence < IN_SAMPLE_CONFIDENCE:
        return None
    return (f"the given probabilities look in-sample (they agree with the given labels on {accuracy:.1%} of rows, "
            f"mean top probability {confidence:.3f}): a model that trained on these rows has memorised their labels, "
            "wrong ones included, so cleanlab will miss label issues; give cross-validated (out-of-fold) "
            "probabilities")


PRED_PROBS_FLAG = "--pred-probs"
FEATURES_FLAG = "--features"
"""How messages name the two inputs (the CLI's flags; the Score page shows the same one-line errors)."""


def read_pred_probs(spec: str, dataset: "Dataset") -> UserArray:
    """A user's (N, C) out-of-sample probabilities for ``dataset`` (file or manifest column), read and checked."""
    return check_pred_probs(load_user_array(spec, dataset.samples, PRED_PROBS_FLAG, dataset.classes),
                            len(dataset.classes))


def read_features(spec: str, dataset: "Dataset") -> UserArray:
    """A user's (N, D) embeddings for ``dataset`` (file or manifest column), read and checked."""
    return check_features(load_user_array(spec, dataset.samples, FEATURES_FLAG))
