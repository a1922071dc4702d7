"""CLIP scores on cached embeddings: alignment, zero-shot, caption, k-NN, adapter and CPS selection.

Everything here works on arrays (L2-normalised image embeddings, prompt / caption embeddings,
int label ids) so it never loads a model; text encoding, where needed, is an injected callable.
:func:`clip_scores` is the producer the pipeline calls: one DataFrame column per score plus a
:class:`~pruning_core.scoring.score_info.ScoreInfo` for each numeric one.

Columns (rows aligned with the samples):

======================================  ===========  =================================================
column                                  suspicious   meaning
======================================  ===========  =================================================
``clip.label_alignment``                low          cos(image, its label's prompt embedding) = SAS
``clip.zero_shot_disagreement``         high         1 when zero-shot top-1 != given label, else 0
``clip.zero_shot_margin``               high         p(top-1) - p(given label)
``clip.zero_shot_confidence``           low          p(given label) under zero-shot softmax
``clip.suggested_label``                (none)       zero-shot top-1 class NAME (a string, so no
                                                     ScoreInfo: it is not a score to sort or colour by)
``clip.caption_alignment``              low          cos(image, its caption); only with captions
``clip.diversity``                      low          SDS: mean cos distance to k same-class neighbours
                                                     (low = redundant; NaN alone in its class)
``clip.outlier``                        high         mean cos distance to k nearest neighbours overall
``clip.duplicate_group``                (none)       near-duplicate group id, -1 for none (an id, not
                                                     a score)
``clip.duplicate_count``                high         other members in the sample's duplicate group
======================================  ===========  =================================================
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from pruning_core.clip_scores.adapter import ClipAdapter
from pruning_core.clip_scores.alignment import ZeroShot, caption_alignment, label_alignment, zero_shot
from pruning_core.clip_scores.cps import CPSConfig, CPSResult, cps_optimize, cps_select, standardize
from pruning_core.clip_scores._common import knn_block_bytes, throttled, unit_rows
from pruning_core.clip_scores.neighbors import (
    DEFAULT_KNN,
    KnnConfig,
    KnnOptions,
    diversity_sds,
    groups_from_pairs,
    knn,
    mean_distance,
    near_duplicate_groups,
    outlier_score,
)
from pruning_core.audit.suggest import PROBABILITY_SOURCES
from pruning_core.clip_scores.prompts import DEFAULT_TEMPLATES, class_text_embeddings
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report
from pruning_core.scoring.score_info import ScoreInfo

__all__ = [
    "CPSConfig",
    "CPSResult",
    "ClipAdapter",
    "DEFAULT_KNN",
    "DEFAULT_TEMPLATES",
    "KnnConfig",
    "KnnOptions",
    "SCORE_INFOS",
    "ZeroShot",
    "caption_alignment",
    "class_text_embeddings",
    "clip_scores",
    "knn_scores",
    "cps_optimize",
    "cps_select",
    "diversity_sds",
    "groups_from_pairs",
    "knn",
    "label_alignment",
    "mean_distance",
    "near_duplicate_groups",
    "outlier_score",
    "standardize",
    "unit_rows",
    "zero_shot",
]

SCORE_INFOS: dict[str, ScoreInfo] = {
    info.name: info
    for info in (
        ScoreInfo("clip.label_alignment", "Cosine between the image and its label's prompt embedding (SAS); low = image does not match its label", "low"),
        ScoreInfo("clip.zero_shot_disagreement", "1 when CLIP's zero-shot top-1 class differs from the given label", "high"),
        ScoreInfo("clip.zero_shot_margin", "Zero-shot probability of the top-1 class minus that of the given label", "high"),
        ScoreInfo("clip.zero_shot_confidence", "Zero-shot probability of the given label", "low"),
        ScoreInfo("clip.caption_alignment", "Cosine between the image and its own caption; low = likely mismatched pair", "low"),
        ScoreInfo("clip.diversity", "Mean cosine distance to the k nearest same-class neighbours (SDS); low = redundant", "low"),
        ScoreInfo("clip.outlier", "Mean cosine distance to the k nearest neighbours of any class; high = outlier", "high"),
        ScoreInfo("clip.duplicate_count", "Number of other samples in this sample's near-duplicate group", "high"),
    )
}
"""ScoreInfo of every numeric column :func:`clip_scores` can produce."""

_STAGE = "CLIP scores"
KNN_SCORES = ("diversity", "outlier", "duplicate_count")
"""The scores :func:`knn_scores` makes in any embedding space (``<family>.<name>``)."""


def knn_scores(
    img: np.ndarray,
    label_ids: np.ndarray,
    *,
    k: int,
    dup_threshold: float,
    family: str,
    space: str = "",
    max_dup_neighbors: int = 32,
    device: Union[str, torch.device] = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    on_stage: Optional[Callable[[], None]] = None,
) -> tuple[dict[str, np.ndarray], dict[str, ScoreInfo]]:
    """The k-NN scores of any embedding (CLIP's, or a user's ``--features``): ``<family>.diversity``,
    ``<family>.outlier``, ``<family>.duplicate_group`` and ``<family>.duplicate_count``.

    One all-pairs pass (``max(k, max_dup_neighbors)`` neighbours) serves the outlier score, the
    duplicate links and, for the rows whose nearest neighbours hold k of their own class, diversity
    (:func:`~pruning_core.clip_scores.neighbors.same_group_neighbors`; the others are searched within
    their class).  ``space`` prefixes the score descriptions (which embedding they were computed in) for
    a family other than ``clip``; ``on_stage`` is called between the two passes (the CLIP producer's
    progress stages).
    """
    blocks = knn_block_bytes(device)
    kk = max(k, max_dup_neighbors)
    dist, ind = knn(img, img, kk, True, device=device, block_bytes=blocks, progress=throttled(progress), cancel=cancel)
    group, count = near_duplicate_groups(img, dup_threshold, neighbors=(dist, ind))
    if on_stage is not None:
        on_stage()
    cols: dict[str, np.ndarray] = {
        f"{family}.diversity": diversity_sds(img, label_ids, k, (dist, ind), device=device, block_bytes=blocks,
                                             cancel=cancel),
        f"{family}.outlier": mean_distance(dist[:, :k]),
        f"{family}.duplicate_group": group,
        f"{family}.duplicate_count": count,
    }
    infos = {}
    for name in KNN_SCORES:
        info = SCORE_INFOS[f"clip.{name}"]
        infos[f"{family}.{name}"] = ScoreInfo(f"{family}.{name}", f"{space}{info.description}", info.suspicious)
    return cols, infos



def clip_scores(
    img: np.ndarray,
    label_ids: np.ndarray,
    classes: Sequence[str],
    class_emb: np.ndarray,
    *,
    k: int,
    dup_threshold: float,
    captions_emb: Optional[np.ndarray] = None,
    temperature: float = 100.0,
    max_dup_neighbors: int = 32,
    device: Union[str, torch.device] = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> tuple[pd.DataFrame, dict[str, ScoreInfo]]:
    """All CLIP scores of a dataset as ``(table, infos)``; see the module docstring for the columns.

    ``img`` (N, D) image embeddings (pass adapted ones, ``ClipAdapter.transform_images``, to score in
    the adapted space, with ``class_emb`` through ``transform_text``); ``label_ids`` (N,) indices into
    ``classes``; ``class_emb`` (C, D) prompt embeddings (``class_text_embeddings``).  One all-pairs
    k-NN pass (``max(k, max_dup_neighbors)`` neighbours) serves both the outlier score and the
    duplicate links; the same-class pass for diversity is C times cheaper.  Progress is reported
    per stage under the stage name "CLIP scores"; ``cancel`` is checked between blocks.
    """
    n = int(img.shape[0])
    classes = list(classes)
    if len(classes) != int(class_emb.shape[0]):
        raise ValueError(f"{len(classes)} class names but {class_emb.shape[0]} class embeddings")
    stages = ["label alignment", "zero-shot"]
    if captions_emb is not None:
        stages.append("caption alignment")
    stages += ["outlier + duplicates (k-NN)", "diversity (same-class k-NN)"]
    total = len(stages)
    done = 0

    def step(name: str) -> None:
        check(cancel)
        report(progress, _STAGE, done, total, name)

    cols: dict[str, object] = {}
    step(stages[done])
    cols["clip.label_alignment"] = label_alignment(img, label_ids, class_emb, device=device, cancel=cancel)
    done += 1

    step(stages[done])
    zs = zero_shot(img, class_emb, label_ids, temperature, device=device, cancel=cancel)
    cols["clip.zero_shot_disagreement"] = zs.disagreement
    cols["clip.zero_shot_margin"] = zs.margin
    cols["clip.zero_shot_confidence"] = zs.confidence
    cols["clip.suggested_label"] = np.asarray(classes, dtype=object)[zs.suggested] if n else np.zeros(0, dtype=object)
    for i, name in enumerate(classes):  # what audit.suggest calibrates and combines with the proxy's
        cols[f"{PROBABILITY_SOURCES['CLIP zero-shot']}{name}"] = zs.probs[:, i]
    done += 1

    if captions_emb is not None:
        step(stages[done])
        cols["clip.caption_alignment"] = caption_alignment(img, captions_emb, device=device, cancel=cancel)
        done += 1

    def next_stage() -> None:
        nonlocal done
        done += 1
        step(stages[done])

    step(stages[done])
    knn_cols, _ = knn_scores(img, label_ids, k=k, dup_threshold=dup_threshold, family="clip",
                             max_dup_neighbors=max_dup_neighbors, device=device, progress=progress, cancel=cancel,
                             on_stage=next_stage)
    cols.update(knn_cols)
    done += 1
    report(progress, _STAGE, total, total, "done")

    table = pd.DataFrame(cols)
    infos = {name: SCORE_INFOS[name] for name in table.columns if name in SCORE_INFOS}
    return table, infos
