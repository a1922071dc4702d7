"""The contrastive student every distillation run trains and every comparison evaluates.

MDW (Dang et al., arXiv 2506.01586), like the vision–language distillation it builds on (Wu et al.,
arXiv 2308.07545), trains an image encoder and a text *projection* on top of a frozen, pretrained text
encoder.  PruneScope does the same at the demo's scale:

* image tower: the tiny open_clip ``ModifiedResNet`` of :mod:`pruning_core.demo.tiny_clip` (width 8,
  32 px), randomly initialised; it sees images as the normalised tensors open_clip feeds the model;
* text tower: the frozen text tower of the CLIP that scored the dataset (its caption embeddings are
  cached by :func:`pruning_core.scoring.pipeline.clip_embeddings`) followed by a learnable linear
  projection into the joint space, also randomly initialised.

So a "text" the student trains on is a vector in the frozen text tower's **output** space, and that is
where distilled texts live (:mod:`pruning_core.distill.mdw` says why).  Every set the comparison trains on
(distilled, random, cleanest, all) goes through this one model and :func:`train_student`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.demo.tiny_clip import TINY_CLIP_CONFIG, create_tiny_clip
from pruning_core.runtime.progress import CancelToken, check

EVAL_MOMENTUM = 0.9
"""SGD momentum of every student :func:`train_student` trains (the comparison's one recipe)."""
EVAL_STEPS = 300
"""SGD steps of a student that scores a set (the comparison's, and a distillation's validation)."""
EVAL_BATCH = 128
"""Most pairs per step of such a student."""
REAL_LR = 0.01
"""The step real pairs train at; a distilled set starts at the same effective step (``mdw.initial_state``)."""
LOGIT_SCALE = 10.0
"""Fixed inverse temperature of the student's contrastive logits.  Departure: CLIP and MDW learn it; a fixed
value keeps the unrolled trajectories comparable between expert and student (a learned scale moves every
logit at once and dominates the parameter distance on a model this small)."""


class Student(torch.nn.Module):
    """Image tower (tiny ModifiedResNet) + linear text projection over frozen text-tower outputs."""

    def __init__(self, text_dim: int, seed: int) -> None:
        super().__init__()
        self.visual = create_tiny_clip(seed).visual
        generator = torch.Generator().manual_seed(seed + 1)
        embed_dim = int(TINY_CLIP_CONFIG["embed_dim"])
        self.text_projection = torch.nn.Parameter(
            torch.randn(text_dim, embed_dim, generator=generator) / math.sqrt(text_dim))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit image and text features in the joint space."""
        return F.normalize(self.visual(images), dim=-1), F.normalize(texts @ self.text_projection, dim=-1)


def soft_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          targets: Optional[torch.Tensor] = None,
                          row_weights: Optional[torch.Tensor] = None,
                          col_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets and per-pair weights.

    ``targets[i, j]`` (rows sum to 1 image→text; columns are renormalised for text→image) replaces CLIP's
    identity; ``row_weights[i]`` / ``col_weights[j]`` weight image ``i``'s and text ``j``'s terms (the
    weighted mean).  With identity targets and unit weights this is CLIP's loss.
    """
    logits = LOGIT_SCALE * image_features @ text_features.t()
    n_img, n_txt = logits.shape
    if targets is None:
        targets = torch.eye(n_img, n_txt, dtype=logits.dtype)
    row_t = targets / targets.sum(dim=1, keepdim=True)
    col_t = (targets / targets.sum(dim=0, keepdim=True)).t()
    loss_i = -(row_t * F.log_softmax(logits, dim=1)).sum(dim=1)
    loss_t = -(col_t * F.log_softmax(logits.t(), dim=1)).sum(dim=1)
    rw = torch.ones(n_img) if row_weights is None else row_weights
    cw = torch.ones(n_txt) if col_weights is None else col_weights
    return 0.5 * ((rw * loss_i).sum() / rw.sum() + (cw * loss_t).sum() / cw.sum())


@dataclass(frozen=True)
class PairSet:
    """What a student trains on: normalised images, text vectors, and how they correspond.

    ``targets`` (K × K soft correspondences, rows = images) is None for real pairs (the diagonal);
    ``weights`` (per pair) is None for equal weights; ``lr`` is the step size to train with (a distilled set
    carries its learned one, converted to the shared recipe by ``mdw.distilled_pairs``).
    """

    images: torch.Tensor
    texts: torch.Tensor
    lr: float
    targets: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    def __len__(self) -> int:
        return int(self.images.shape[0])


def train_student(pairs: PairSet, *, steps: int, batch_size: int, seed: int,
                  cancel: Optional[CancelToken] = None) -> Student:
    """A fresh student trained from scratch on ``pairs`` for ``steps`` SGD steps (returned in eval mode).

    Minibatches of at most ``batch_size`` pairs, drawn without replacement per epoch; a batch's soft
    targets are the rows/columns of ``pairs.targets`` it holds.  Plain SGD (momentum 0.9) at ``pairs.lr``
    with cosine decay: the same recipe for every set the comparison trains on.
    """
    torch.manual_seed(seed)
    model = Student(int(pairs.texts.shape[1]), seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=pairs.lr, momentum=EVAL_MOMENTUM)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    n = len(pairs)
    batch = min(batch_size, n)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for step in range(steps):
        if step % 50 == 0:
            check(cancel)
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        image_features, text_features = model(pairs.images[idx], pairs.texts[idx])
        targets = None if pairs.targets is None else pairs.targets[idx][:, idx] + 1e-8
        weights = None if pairs.weights is None else pairs.weights[idx]
        loss = soft_contrastive_loss(image_features, text_features, targets, weights, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return model


def retrieval_recall(model: Student, images: torch.Tensor, texts: torch.Tensor, captions: np.ndarray,
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image→text and text→image recall@k on a held-out set of matched pairs.

    A retrieved item counts as a hit when its caption is the query's caption word for word (held-out sets
    repeat captions; identical texts have identical embeddings, so rank ties between them would otherwise
    decide the score).  Keys: ``i2t@1``, ``i2t@5``, ``t2i@1``, ``t2i@5``.
    """
    with torch.no_grad():
        image_features, text_features = model(images, texts)
        sims = image_features @ text_features.t()
    codes = torch.from_numpy(np.unique(np.asarray(captions, dtype=str), return_inverse=True)[1].reshape(-1))
    out: dict[str, float] = {}
    for name, matrix in (("i2t", sims), ("t2i", sims.t())):
        top = matrix.topk(max(ks), dim=1).indices
        hits = codes[top] == codes[:, None]
        for k in ks:
            out[f"{name}@{k}"] = float(hits[:, :k].any(dim=1).float().mean())
    return out
