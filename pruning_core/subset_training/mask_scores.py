"""AdaPruner's learned mask as a cached score column (``adapruner.keep_logit``).

The mask is fitted for one target ratio on the proxy the dynamics scores use, and stored like any
other score so the Prune page, ``prunescope select --strategy adapruner`` and the evaluation grid
all read the same cached result.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.data.datasets import Dataset, decoded_images
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.runtime.progress import CancelToken, ProgressCallback
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.selection import ADAPRUNER_COLUMN

from .adapruner import AdaPruner


def adapruner_info(ratio: float) -> ScoreInfo:
    return ScoreInfo(
        name=ADAPRUNER_COLUMN,
        description=f"AdaPruner mask logit learned for keeping {ratio:.0%} (high = keep); "
        "the 'adapruner' strategy keeps the highest",
        suspicious="low",
    )


def adapruner_logits(
    x: Any,
    y: np.ndarray,
    ratio: float,
    config: DynamicsConfig,
    store: ResultStore,
    *,
    fingerprint: str,
    num_classes: int,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Mask logits of an AdaPruner fitted on ``(x, y)`` for ``ratio`` (half the epochs warm start).

    ``fingerprint`` identifies the training data (a dataset, or a split of one) in the cache key.
    """
    params = {**config.training_params(), "ratio": float(ratio), "method": "adapruner"}

    def fit() -> Computed:
        warmup = config.epochs // 2
        pruner = AdaPruner(
            ratio, warmup_epochs=warmup, mask_epochs=max(1, config.epochs - warmup), seed=config.seed,
            device=config.device, arch=config.arch, width=config.width, batch_size=config.batch_size,
            precision=config.precision, num_classes=num_classes,
        ).fit(x, y, progress=progress, cancel=cancel)
        return Computed(arrays={"logits": pruner.mask_logits_},
                        meta={"kept_fraction": pruner.kept_fraction_, "history": pruner.history_,
                              "train": pruner.train_meta_})

    return CachedStep("adapruner", fingerprint, params).run(store, fit).array("logits")


def adapruner_score_table(
    dataset: Dataset,
    ratio: float,
    config: DynamicsConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """The ``adapruner.keep_logit`` column for every sample of ``dataset``."""
    if config.arch != "resnet9":
        raise ValueError("AdaPruner trains the image proxy: use arch 'resnet9'")
    x = decoded_images(dataset, config.image_size, store, progress=progress, cancel=cancel)
    logits = adapruner_logits(x, dataset.label_ids, ratio, config, store, fingerprint=dataset.fingerprint,
                              num_classes=len(dataset.classes), progress=progress, cancel=cancel)
    frame = pd.DataFrame({ADAPRUNER_COLUMN: logits}, index=dataset.samples.index)
    settings = {"adapruner": {**config.training_params(), "ratio": float(ratio)}}  # reaches the sidecar and manifest
    return ScoreTable(frame, {ADAPRUNER_COLUMN: adapruner_info(ratio)}, settings=settings)
