"""The reproducibility manifest: the one document the CLI and the Export page write and replay.

A manifest names everything a kept subset depended on: the score table (by a hash of its content
and score directions), the dataset it scored, how every score family was made (the score table's
``settings`` as its sidecar records them: CLIP model and weights identity, adapter, k-NN settings,
the proxy and its planned settings, AdaPruner), the selection recipe with its seed, the reviewer
decisions in force (removals and relabels), every relabel applied to the kept subset with its source
(a reviewer's decision, an accepted suggestion, or the "fix" strategy's confident suggestion), package versions and when it was written.
:meth:`Manifest.replay` re-runs the recipe on a score table that :meth:`Manifest.verify` accepts and
refuses a subset whose digest differs, so a manifest either reproduces its subset exactly or says
why not.  ``prunescope select`` and ``pages/export.py`` both go through this type, so a manifest
written by one replays through the other.

A manifest of kind ``distilled`` describes a distilled image–caption set instead (``prunescope distill``): the
dataset it was distilled from, the CLIP that embedded the captions, the distillation's settings, how far the run
got, and the SHA-256 of every exported file (:class:`DistilledRecord`); it has no score table or selection, and
:func:`pruning_core.distill.export.read_distilled` reads the set back through it.  The one reader,
:meth:`Manifest.read`, reads both kinds; replaying a distilled set's manifest as a selection is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from cache.store import CODE_VERSION, atomic_write_bytes
from pruning_core import __version__
from pruning_core.export.subset import paths_digest, selection_table
from pruning_core.scoring.score_table import DATASET_SETTING, ScoreTable
from pruning_core.selection import ScoreRanks, SelectionRecipe, run_recipe, strategy_relabels

MANIFEST_VERSION = 2
"""Bumped when the document's layout changes; :meth:`Manifest.from_json` refuses other versions.  (``kind`` came
later without a bump: a version-2 document without it is a subset's, as every one written before it was.)"""

SUBSET, DISTILLED = "subset", "distilled"
MANIFEST_KINDS = (SUBSET, DISTILLED)
"""What a manifest describes: a kept subset of scored data, or a distilled set of synthetic pairs."""

BUNDLE_SCORES = "scores.parquet"
"""The score table's name inside the Export page's bundle, next to the manifest."""

PACKAGES = ("numpy", "pandas", "pyarrow", "scikit-learn", "torch", "open_clip_torch", "faiss-cpu", "cleanlab")
"""Distributions whose versions can change scores or selections; recorded in every manifest."""


def table_sha256(frame: pd.DataFrame, infos: Mapping[str, Any]) -> str:
    """Hash of a score table's content: column names and values, plus each score's suspicious direction.

    Values, not file bytes: the same table hashes alike whether it is held in the app's session,
    loaded from parquet or from an older CSV table, and whichever pyarrow wrote it.  Directions
    are part of it because a selection ranks by them.
    """
    digest = hashlib.sha256()
    for column in frame.columns:
        digest.update(json.dumps(str(column)).encode())
        digest.update(pd.util.hash_pandas_object(frame[column], index=False).to_numpy().tobytes())
    directions = sorted((name, getattr(info, "suspicious", None)) for name, info in infos.items())
    digest.update(json.dumps(directions).encode())
    return digest.hexdigest()


def package_versions() -> dict[str, Optional[str]]:
    """PruneScope's own version and code version, Python's, and each of :data:`PACKAGES` (None: not installed)."""
    versions: dict[str, Optional[str]] = {"prunescope": __version__, "code": CODE_VERSION,
                                          "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DistilledRecord:
    """What a distilled set depended on, how far its run got, and the digest of every file it was exported as."""

    dataset: dict
    """``{"name", "fingerprint"}`` of the real pairs it was distilled from."""
    clip: dict
    """Identity of the CLIP whose text tower embedded the captions (model, weights), as the cache keys it."""
    settings: dict
    """Every distillation setting (``MDWConfig``'s fields), ``budget_s``, and ``start`` (a digest of the real rows
    it started from) when it started from chosen pairs (prune, then distil)."""
    pairs: int
    """K, the synthetic pairs."""
    iterations: int
    """Matching iterations done (``settings["iterations"]`` is the most it was allowed)."""
    stopped_by: str
    """``"budget"`` or ``"iterations"``: which of the two ended the run."""
    seconds: float
    plan: dict
    """What the probe planned within the budget (seconds for experts, per iteration, iterations expected)."""
    log_step_size: float
    """The learned student step η, as ``log η`` exactly as the set holds it."""
    cache_key: str
    """The result-store entry the set was exported from (another run with these settings reuses it)."""
    files: dict
    """Path relative to the manifest's folder -> SHA-256 of its bytes, for every file the export wrote."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, block: Any) -> "DistilledRecord":
        """The ``distilled`` block of a manifest; ``KeyError`` / ``TypeError`` / ``ValueError`` on a malformed one."""
        if not isinstance(block, dict):
            raise TypeError(f"'distilled' must be an object, not a {type(block).__name__}")
        return cls(dataset=dict(block["dataset"]), clip=dict(block["clip"]), settings=dict(block["settings"]),
                   pairs=int(block["pairs"]), iterations=int(block["iterations"]),
                   stopped_by=str(block["stopped_by"]), seconds=float(block["seconds"]), plan=dict(block["plan"]),
                   log_step_size=float(block["log_step_size"]), cache_key=str(block["cache_key"]),
                   files={str(path): str(digest) for path, digest in dict(block["files"]).items()})


@dataclass(frozen=True)
class Manifest:
    """What a kept subset (or a distilled set) depended on, and its digest.

    Build a subset's with :meth:`build`, a distilled set's with :meth:`of_distilled`; JSON via :meth:`to_json`.
    The subset fields are None in a distilled set's manifest, ``distilled`` is None in a subset's.
    """

    kind: str = SUBSET
    """One of :data:`MANIFEST_KINDS`."""
    scores_file: Optional[str] = None
    """The score table, relative to the manifest's folder (or absolute): where replay finds it by default."""
    scores_sha256: Optional[str] = None
    """:func:`table_sha256` of the score table the subset was selected from."""
    n_samples: Optional[int] = None
    scoring: dict = field(default_factory=dict)
    """The score table's settings, by family (``dataset``, ``clip``, ``dynamics``, ``adapruner``): the scored
    dataset's fingerprint and how each family was made, model and weights identity and seeds included,
    exactly as its sidecar records them."""
    recipe: Optional[SelectionRecipe] = None
    review: Optional[dict] = None
    """A :meth:`DecisionStore.snapshot` (removed paths, relabels), or None when no decisions were applied."""
    kept_count: Optional[int] = None
    kept_digest: Optional[str] = None
    relabelled: dict = field(default_factory=dict)
    """path -> ``{"label": new, "source": ...}`` for every relabel applied: the review's (source as the decision
    store records it: ``review``, ``suggestion``, ...) and, for a relabelling strategy, its own (source
    ``strategy:<name>``; a reviewer's decision on the same sample wins).  Replay recomputes and compares it."""
    distilled: Optional[DistilledRecord] = None
    """The distilled set's record (kind ``distilled`` only)."""
    versions: dict = field(default_factory=package_versions)
    created_at: str = field(default_factory=_now, compare=False)
    """When it was written (UTC); the only field two manifests of one selection may differ in."""

    def __post_init__(self) -> None:
        """A manifest is one kind or the other, whole: never a selection and a distilled set at once."""
        subset_parts = [self.scores_file, self.scores_sha256, self.n_samples, self.recipe, self.kept_count,
                        self.kept_digest]
        whole = {SUBSET: self.distilled is None and None not in subset_parts,
                 DISTILLED: self.distilled is not None and subset_parts == [None] * len(subset_parts)}
        if not whole.get(self.kind, False):
            raise ValueError(f"a manifest of kind {self.kind!r} holds either a whole selection (kind {SUBSET!r}) or "
                             f"a distilled set's record (kind {DISTILLED!r})")

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        table: ScoreTable,
        recipe: SelectionRecipe,
        mask: np.ndarray,
        *,
        scores_file: str,
        review: Optional[Mapping[str, Any]] = None,
    ) -> "Manifest":
        """The manifest of ``mask`` (what ``recipe`` kept from ``table``) under ``review``."""
        mask = np.asarray(mask, dtype=bool)
        kept = table.frame["path"][mask]
        settings = json.loads(json.dumps(table.settings, default=str))  # JSON-shaped, as the sidecar holds it
        return cls(
            kind=SUBSET,
            scores_file=str(scores_file),
            scores_sha256=table_sha256(table.frame, table.infos),
            n_samples=int(len(table.frame)),
            scoring=settings,
            recipe=recipe.resolved(table.frame, table.infos),  # the weights that ran, not "the default of the day"
            review=dict(review) if review is not None else None,
            kept_count=int(mask.sum()),
            kept_digest=paths_digest(kept),
            relabelled=applied_relabels(table.frame, recipe, mask, review),
        )

    @classmethod
    def of_distilled(cls, record: DistilledRecord) -> "Manifest":
        """The manifest of a distilled set (:func:`pruning_core.distill.export.export_distilled` builds ``record``)."""
        return cls(kind=DISTILLED, distilled=record)

    @property
    def dataset_fingerprint(self) -> Optional[str]:
        """The scored (or distilled) dataset, as the manifest names it (None for score tables of older versions)."""
        if self.distilled is not None:
            return self.distilled.dataset.get("fingerprint")
        return (self.scoring.get(DATASET_SETTING) or {}).get("fingerprint")

    def require_subset(self, source: str) -> None:
        """Refuse, in one line naming ``source``, to use a distilled set's manifest as a selection's."""
        if self.kind != SUBSET:
            record = self.distilled
            raise ValueError(f"{source}: cannot replay the manifest of a distilled set ({record.pairs} synthetic pairs "
                             f"of dataset {record.dataset.get('name')}): it records no selection "
                             "(pruning_core.distill.export.read_distilled reads it)")

    @property
    def removed(self) -> list[str]:
        """Reviewer removals in force when the subset was selected (never the live store's)."""
        return list((self.review or {}).get("removed") or [])

    @property
    def relabels(self) -> dict[str, str]:
        """Every relabel applied (review and strategy): path -> new label."""
        return {**dict((self.review or {}).get("relabels") or {}),
                **{path: entry["label"] for path, entry in self.relabelled.items()}}

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        head = {"manifest_version": MANIFEST_VERSION, "kind": self.kind, "created_at": self.created_at,
                "versions": dict(self.versions)}
        if self.distilled is not None:
            return {**head, "distilled": self.distilled.as_dict()}
        return {
            **head,
            "scores": {"file": self.scores_file, "rows": self.n_samples, "sha256": self.scores_sha256},
            "scoring": self.scoring,
            "selection": self.recipe.as_dict(),
            "review": self.review,
            "kept": {"count": self.kept_count, "digest": self.kept_digest},
            "relabelled": self.relabelled,
        }

    def to_json(self) -> str:
        """Sorted keys, indent 2: stable and readable, so two manifests diff line by line."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> "Manifest":
        """Parse a manifest; ``ValueError`` naming ``source`` and the missing or malformed part otherwise."""
        try:
            doc = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source}: the manifest is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: the manifest must be a JSON object, not a {type(doc).__name__}")
        version = doc.get("manifest_version", 1)
        if version != MANIFEST_VERSION:
            raise ValueError(f"{source}: manifest version {version} is unsupported (this PruneScope reads version "
                             f"{MANIFEST_VERSION}); select the subset again to write a new manifest")
        kind = doc.get("kind", SUBSET)
        if kind not in MANIFEST_KINDS:
            raise ValueError(f"{source}: manifest kind {kind!r} is unknown (this PruneScope reads "
                             f"{', '.join(map(repr, MANIFEST_KINDS))})")
        if kind == DISTILLED:
            try:
                return cls(kind=DISTILLED, distilled=DistilledRecord.from_dict(doc["distilled"]),
                           versions=dict(doc["versions"]), created_at=str(doc["created_at"]))
            except KeyError as exc:
                raise ValueError(f"{source}: the distilled set's manifest lacks {exc.args[0]}") from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: the distilled set's manifest has a malformed entry ({exc})") from None
        try:
            recipe = SelectionRecipe(**doc["selection"])
        except KeyError:
            raise ValueError(f"{source}: the manifest lacks selection") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: the manifest's 'selection' is not a selection recipe ({exc})") from None
        try:
            manifest = cls(
                kind=SUBSET,
                scores_file=str(doc["scores"]["file"]),
                scores_sha256=str(doc["scores"]["sha256"]),
                n_samples=int(doc["scores"]["rows"]),
                scoring=dict(doc["scoring"]),
                recipe=recipe,
                review=dict(doc["review"]) if doc["review"] is not None else None,
                kept_count=int(doc["kept"]["count"]),
                kept_digest=str(doc["kept"]["digest"]),
                relabelled={str(p): {"label": str(e["label"]), "source": str(e["source"])}
                            for p, e in dict(doc.get("relabelled") or {}).items()},
                versions=dict(doc["versions"]),
                created_at=str(doc["created_at"]),
            )
        except KeyError as exc:
            raise ValueError(f"{source}: the manifest lacks {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: the manifest has a malformed entry ({exc})") from None
        return manifest

    @classmethod
    def read(cls, path: os.PathLike | str) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"replay manifest not found: {path}")
        return cls.from_json(path.read_bytes(), source=str(path))

    def write(self, path: os.PathLike | str) -> None:
        atomic_write_bytes(Path(path), self.to_json().encode())

    def scores_path(self, manifest_path: os.PathLike | str) -> Path:
        """The score table this manifest names: absolute as written, or relative to the manifest's folder."""
        self.require_subset(str(manifest_path))
        path = Path(self.scores_file)
        return path if path.is_absolute() else Path(manifest_path).resolve().parent / path

    # ------------------------------------------------------------------ verify and replay

    def verify(self, table: ScoreTable, source: str, *, fingerprint: Optional[str] = None) -> None:
        """Refuse a score table (or dataset ``fingerprint``) other than the one the manifest names.

        ``source`` names the table in the one-line ``ValueError`` (its file, or "this session's scores").
        """
        self.require_subset(source)
        got = table_sha256(table.frame, table.infos)
        if got != self.scores_sha256:
            raise ValueError(f"{source}: not the score table this manifest was made from ({len(table.frame):,} rows, "
                             f"sha256 {got[:12]} vs the manifest's {self.n_samples:,} rows, {self.scores_sha256[:12]})")
        if fingerprint is not None and self.dataset_fingerprint is not None and fingerprint != self.dataset_fingerprint:
            raise ValueError(f"{source}: scores of dataset {fingerprint}, the manifest names dataset "
                             f"{self.dataset_fingerprint}")

    def replay(self, table: ScoreTable, source: str, *, fingerprint: Optional[str] = None,
               ranks: Optional[ScoreRanks] = None) -> np.ndarray:
        """The kept mask, re-selected from ``table`` with the recorded recipe and review decisions.

        Refuses a table :meth:`verify` refuses, and a result whose digest differs from the recorded one
        (then the code changed since the manifest was written).
        """
        self.verify(table, source, fingerprint=fingerprint)
        mask = run_recipe(table.frame, table.infos, self.recipe, self.removed or None, ranks=ranks)
        if int(mask.sum()) != self.kept_count or paths_digest(table.frame["path"][mask]) != self.kept_digest:
            raise ValueError(f"{source}: replay kept {int(mask.sum()):,} samples with another digest than the "
                             f"manifest's {self.kept_count:,}: the selection code changed since it was written "
                             f"(manifest of PruneScope {self.versions.get('prunescope')}, code {self.versions.get('code')})")
        relabelled = applied_relabels(table.frame, self.recipe, mask, self.review)
        if relabelled != self.relabelled:
            changed = [p for p in set(relabelled) | set(self.relabelled) if relabelled.get(p) != self.relabelled.get(p)]
            raise ValueError(f"{source}: replay relabels {len(relabelled):,} samples, the manifest "
                             f"{len(self.relabelled):,} ({len(changed):,} differ): the suggestion code changed "
                             "since it was written")
        return mask

    def selection_table(self, frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
        """Every sample with its fate, this manifest's relabels applied (:func:`export.selection_table`)."""
        return selection_table(frame, mask, removed_paths=self.removed, relabels=self.relabels)


def applied_relabels(frame: pd.DataFrame, recipe: SelectionRecipe, mask: np.ndarray,
                     review: Optional[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """path -> ``{"label", "source"}`` of every relabel a selection applies (see :attr:`Manifest.relabelled`)."""
    review = review or {}
    sources = dict(review.get("relabel_sources") or {})
    out = {path: {"label": str(label), "source": f"strategy:{recipe.strategy}"}
           for path, label in strategy_relabels(frame, recipe, mask).items()}
    out |= {str(path): {"label": str(label), "source": str(sources.get(path, "review"))}
            for path, label in dict(review.get("relabels") or {}).items()}
    return dict(sorted(out.items()))


def kept_rows(full: pd.DataFrame) -> pd.DataFrame:
    """The kept list the CLI writes and the Export page serves, from a :func:`export.selection_table`."""
    return full[full["status"] == "kept"].reset_index(drop=True)


__all__ = ["BUNDLE_SCORES", "DISTILLED", "MANIFEST_KINDS", "MANIFEST_VERSION", "SUBSET", "DistilledRecord", "Manifest",
           "applied_relabels", "kept_rows", "package_versions", "table_sha256"]
