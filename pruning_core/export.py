"""Write a kept subset and the manifest that reproduces it.

The reproducibility manifest records everything ``select`` depended on: the score table
(by content hash), the strategy and its parameters, the seed and the code version, plus a
digest of the kept paths.  ``replay`` re-runs the selection and refuses to return a subset
whose digest differs, so a manifest either reproduces its subset exactly or says why not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from cache.store import CODE_VERSION, atomic_write_bytes
from pruning_core import __version__
from pruning_core.selection import SelectionRecipe


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def paths_digest(paths: pd.Series) -> str:
    """Order-independent digest of a set of sample paths."""
    return hashlib.sha256("\n".join(sorted(paths.astype(str))).encode()).hexdigest()


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """CSV, parquet or JSON by the file's suffix, written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        data = frame.to_csv(index=False).encode()
    elif suffix in (".parquet", ".pq"):
        import io

        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        data = buf.getvalue()
    elif suffix == ".json":
        data = frame.to_json(orient="records", indent=1).encode()
    else:
        raise ValueError(f"cannot write {path.name}: use a .csv, .parquet or .json file name")
    atomic_write_bytes(path, data)


def build_manifest(
    scores_path: Path,
    recipe: SelectionRecipe,
    kept: pd.DataFrame,
    *,
    fingerprint: Optional[str] = None,
    models: Optional[Mapping[str, Any]] = None,
    removed_paths: Optional[list[str]] = None,
) -> dict[str, Any]:
    return {
        "prunescope_version": __version__,
        "code_version": CODE_VERSION,
        "dataset_fingerprint": fingerprint,
        "scores": {"path": str(Path(scores_path).resolve()), "sha256": file_sha256(Path(scores_path))},
        "models": dict(models or {}),
        "selection": recipe.as_dict(),
        "review_removed": sorted(removed_paths or []),
        "kept_count": int(len(kept)),
        "kept_digest": paths_digest(kept["path"]),
    }


def write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    atomic_write_bytes(Path(path), json.dumps(manifest, indent=2, sort_keys=True).encode())


def recipe_from_manifest(manifest: Mapping[str, Any]) -> SelectionRecipe:
    return SelectionRecipe(**manifest["selection"])


def check_replay(manifest: Mapping[str, Any], kept: pd.DataFrame) -> None:
    """Raise if a replayed subset differs from the one the manifest recorded."""
    if paths_digest(kept["path"]) != manifest["kept_digest"] or len(kept) != manifest["kept_count"]:
        raise ValueError(
            f"replay produced {len(kept)} samples with a different digest than the manifest's "
            f"{manifest['kept_count']}: the scores or the code changed since it was written"
        )
