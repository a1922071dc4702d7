"""Near-duplicate groups checked in pixel space before anyone is offered a one-click remove.

``clip.duplicate_group`` links images whose CLIP cosine is above the scoring's threshold.  A cosine
that high also joins distinct images of one kind (two red triangles on one background are close in a
small CLIP's space), so on the built-in demo about half of its groups hold no copy.  A copy is close
in pixels too, so each group is checked by a second, independent signal computed from the images:

* **thumbnails**: every member against the group's medoid (the member nearest the mean thumbnail),
  mean absolute difference of ``thumb_size`` x ``thumb_size`` RGB thumbnails (0-255 scale);
* **colour histograms**: total-variation distance of 4 x 4 x 4-bin colour histograms (0-1);
* **labels**: the members' given labels.

A group whose members agree in all three is a ``"duplicate"`` (keep one, remove the rest is safe);
any other is ``"check"`` with the reason: copies labelled differently need a decision about the
label, and look-alikes that differ in pixels are not copies.  Only duplicates are offered with a
one-click remove (``pages/overview.py``); ``bench/bench_duplicates.py`` measures both on the demo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.data.images import load_image_array
from pruning_core.runtime.progress import CancelToken, ProgressCallback

DUPLICATE = "duplicate"
CHECK = "check"

GROUP_COLUMNS = ["group", "rows", "size", "cosine", "pixel_distance", "colour_distance", "labels_agree",
                 "verdict", "reason"]


@dataclass(frozen=True)
class DuplicateCheckConfig:
    """How far in pixels a copy may be from its group's medoid (re-encoding, resizing, light noise)."""

    thumb_size: int = 16
    """Side of the thumbnails compared: small enough that re-encoding and resizing vanish."""
    max_pixel_distance: float = 6.0
    """Largest mean absolute thumbnail difference (0-255) of a copy; the demo's copies (JPEG, noise of
    ±6) measure at most 4.9 and its look-alikes at least 8.8 (``bench/bench_duplicates.py``)."""
    max_colour_distance: float = 0.3
    """Largest total-variation distance (0-1) between a copy's colour histogram and the medoid's; noise
    moves pixels across bin edges, so the demo's noisy copies reach 0.23."""
    histogram_levels: int = 4
    """Levels per channel of the colour histograms (levels ** 3 bins)."""


def colour_histograms(images: np.ndarray, levels: int) -> np.ndarray:
    """``(N, levels**3)`` colour histograms of uint8 RGB images, each summing to 1."""
    n = images.shape[0]
    q = (images.reshape(n, -1, 3).astype(np.int64) * levels) // 256
    bins = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    counts = np.zeros((n, levels ** 3), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), bins.shape[1]), bins.ravel()), 1.0)
    return counts / max(bins.shape[1], 1)


def check_groups(
    group_ids: np.ndarray,
    labels: np.ndarray,
    thumbnails: np.ndarray,
    unreadable: np.ndarray,
    embeddings: Optional[np.ndarray] = None,
    config: DuplicateCheckConfig = DuplicateCheckConfig(),
) -> pd.DataFrame:
    """One row per group (``GROUP_COLUMNS``), most similar first (by ``cosine``).

    ``group_ids`` ``(M,)`` the group of each member row; ``labels``, ``thumbnails`` (uint8
    ``(M, s, s, 3)``), ``unreadable`` (bool) and ``embeddings`` (unit rows; None where they are not at
    hand: ``cosine`` is then NaN) are aligned with it; the frame's ``rows`` are positions into these
    arrays.  Each member is compared with the group's medoid (the member nearest the group's mean
    thumbnail): ``cosine`` is the lowest cosine to it, the distances the largest.
    """
    hist = colour_histograms(thumbnails, config.histogram_levels)
    thumbs = thumbnails.reshape(len(thumbnails), -1).astype(np.float32)
    records = []
    for gid in np.unique(group_ids):
        rows = np.flatnonzero(group_ids == gid)
        medoid = rows[np.argmin(np.abs(thumbs[rows] - thumbs[rows].mean(axis=0)).mean(axis=1))]
        cosine = float("nan") if embeddings is None else float((embeddings[rows] @ embeddings[medoid]).min())
        pixel = float(np.abs(thumbs[rows] - thumbs[medoid]).mean(axis=1).max())
        colour = float(0.5 * np.abs(hist[rows] - hist[medoid]).sum(axis=1).max())
        agree = len(set(labels[rows].tolist())) == 1
        reasons = [why for failed, why in ((bool(unreadable[rows].any()), "an image could not be read"),
                                           (pixel > config.max_pixel_distance, "pixels differ"),
                                           (colour > config.max_colour_distance, "colours differ"),
                                           (not agree, "labels differ")) if failed]
        records.append({"group": int(gid), "rows": rows, "size": len(rows), "cosine": cosine,
                        "pixel_distance": pixel, "colour_distance": colour, "labels_agree": agree,
                        "verdict": CHECK if reasons else DUPLICATE, "reason": ", ".join(reasons)})
    frame = pd.DataFrame.from_records(records, columns=GROUP_COLUMNS)
    return frame.sort_values(["cosine", "group"], ascending=[False, True], na_position="last",
                             kind="stable").reset_index(drop=True)


def duplicate_groups(
    paths: Sequence[os.PathLike | str],
    group_ids: np.ndarray,
    labels: np.ndarray,
    embeddings: Optional[np.ndarray] = None,
    config: DuplicateCheckConfig = DuplicateCheckConfig(),
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> pd.DataFrame:
    """:func:`check_groups` over a whole table: ``paths``, ``group_ids`` (-1 = in no group), ``labels`` and
    ``embeddings`` (the space the groups were found in, or None) aligned with its rows; ``rows`` in the
    result are row positions of the table.

    Only the members' images are decoded (at thumbnail size), so this costs a few files per group.
    """
    group_ids = np.asarray(group_ids, dtype=np.int64)
    members = np.flatnonzero(group_ids >= 0)
    thumbnails, failed = load_image_array([paths[i] for i in members], config.thumb_size, progress=progress,
                                          cancel=cancel, stage="Checking duplicate groups")
    unreadable = np.zeros(len(members), dtype=bool)
    unreadable[list(failed)] = True
    emb = None
    if embeddings is not None:
        emb = np.nan_to_num(np.asarray(embeddings[members], dtype=np.float32))
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    frame = check_groups(group_ids[members], np.asarray(labels, dtype=object)[members], thumbnails, unreadable,
                         emb, config)
    frame["rows"] = [members[r] for r in frame["rows"]]
    return frame


def pass_share(groups: pd.DataFrame) -> float:
    """Share of the groups that pass the pixel and label check (NaN with no groups)."""
    return float((groups["verdict"] == DUPLICATE).mean()) if len(groups) else float("nan")


__all__ = ["CHECK", "DUPLICATE", "DuplicateCheckConfig", "check_groups", "colour_histograms", "duplicate_groups",
           "pass_share"]
