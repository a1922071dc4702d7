"""Class prompt embeddings: a small template ensemble averaged per class.

Averaging a few templates ("a photo of a {}.", "a blurry photo of a {}.", ...) makes the class
text embedding less sensitive to the wording of one prompt (the CLIP paper's prompt ensembling).
Text encoding is injected as a callable so this module does not depend on how the model is loaded.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from pruning_core.clip_scores._common import unit_rows

EncodeText = Callable[[list[str]], np.ndarray]
"""``encode_text(list of n prompts) -> (n, D) float32`` (L2-normalised or not; we re-normalise)."""

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a close-up photo of a {}.",
    "a low resolution photo of a {}.",
    "a cropped photo of the {}.",
)
"""A short ensemble from the CLIP ImageNet prompt list; short keeps text encoding cheap on CPU."""


def class_name_for_prompt(name: str) -> str:
    """Folder-style class names read better in a prompt with spaces ("golden_retriever" -> "golden retriever")."""
    return name.replace("_", " ").strip()


def class_text_embeddings(
    classes: Sequence[str],
    encode_text: EncodeText,
    templates: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """``(C, D)`` float32: each class's prompt embeddings averaged over ``templates``, then re-normalised.

    Each prompt embedding is normalised before averaging, so every template weighs the same;
    all ``C * T`` prompts go to ``encode_text`` in one call (it batches as it likes).
    """
    templates = list(DEFAULT_TEMPLATES if templates is None else templates)
    if not templates:
        raise ValueError("at least one prompt template is needed")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"prompt template {t!r} has no '{{}}' placeholder for the class name")
    classes = list(classes)
    if not classes:
        raise ValueError("no classes given")
    prompts = [t.format(class_name_for_prompt(c)) for c in classes for t in templates]
    emb = np.asarray(encode_text(prompts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(f"encode_text returned shape {emb.shape} for {len(prompts)} prompts")
    mean = unit_rows(emb).reshape(len(classes), len(templates), -1).mean(axis=1)
    return unit_rows(mean)
