"""MDW: distil a noisy image–caption set into K synthetic pairs by trajectory matching.

The method (Dang et al., "Multi-Modal Dataset Distillation in the Wild", arXiv 2506.01586; research.md §5)
at the scale of the demo's tiny CLIP, derived here so every departure has a name.

Objective
---------
Let ``θ*_0 … θ*_T`` be the parameters of a student (:class:`pruning_core.distill.student.Student`) saved
after each epoch of an *expert* run on the real pairs.  The synthetic set ``S = (X, Y, C, η)`` holds K images
``X`` (learnable pixels, normalised, 32 px), K texts ``Y`` (learnable vectors in the frozen text tower's
output space), K × K correspondence logits ``C`` and a step size ``η``.  Matching trajectories (MTT, Cazenavette
et al. 2022) starts a student at ``θ_0 = θ*_t`` and takes N SGD steps on S::

    θ_{n+1} = θ_n − η ∇_θ L_S(θ_n),     L_S = soft InfoNCE(f(X), g(Y); targets P(C), weights w(C))

and asks it to land where the expert was M epochs later::

    L_match(S) = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²

minimised over S by differentiating through the N steps (t and the expert drawn at random each
iteration, t ≤ ``max_start_epoch``).

MDW's noise parts
-----------------
* **Learnable correspondence.**  A fixed diagonal tells the student that synthetic image i goes with text i.
  When S starts from real pairs, some of them are mismatched; MDW lets the pairing itself be learned:
  ``P = softmax(C)`` over all K² entries is a joint soft correspondence, its rows (image→text) and columns
  (text→image) the student's targets.  ``C`` starts at the experts' own contrastive logits for every
  image–text pair of the start (:func:`expert_correspondence`), so a mismatched pair's mass already sits on
  the texts the experts see in its image, and a matched one shares some with texts that describe it in part
  (same shape, other colour); part of the mass stays on the given pairing (departure 12), and ``L_match``
  moves it from there.
* **Correspondence-weighted updates.**  Each synthetic image's (text's) term in ``L_S`` is weighted by how
  sure its correspondence is, ``w_i = max_j P(j | i)`` (held constant in the gradient), so the student's
  steps, and through them the pixel and text updates, are driven by the pairs whose match is clear, and
  an ambiguous pair contributes little until its correspondence sharpens.
* **Noise-robust experts.**  The experts train on weighted InfoNCE, each real pair weighted by
  :func:`alignment_weights` of its ``clip.caption_alignment``: a pair far below the typical alignment
  (a likely mismatch) counts little, so the trajectories S is matched to are those of clean-ish training.

Why texts in the text tower's output space
------------------------------------------
MDW, following Wu et al. (arXiv 2308.07545), freezes a pretrained text encoder and distils text as
vectors in its output embedding space.  PruneScope does the same with the frozen tower of the CLIP that
scored the data: the input space (BPE token embeddings, 77 positions) would put the text transformer
inside every unrolled step (several times the cost on two cores) and its optimum is a sequence of
vectors no token sequence spells; the output space is where the cached caption embeddings already are,
so a distilled text can be shown as its nearest real captions.

Departures from the paper (all deliberate, for two CPU cores)
-------------------------------------------------------------
1. The image tower is the demo's tiny ModifiedResNet at 32 px, not NFNet/ViT at 224 px; the text
   encoder is the scoring CLIP's text tower (the demo's tiny CLIP), not BERT.
2. The contrastive temperature is fixed (:data:`pruning_core.distill.student.LOGIT_SCALE`).
3. The outer optimiser is Adam for pixels, texts, correspondences and log η (MTT uses SGD with
   momentum 0.5); it needs no per-dataset tuning of the pixel learning rate.
4. The correspondence is one joint softmax over K² logits (rows and columns read from it) and the
   update weighting is the per-pair confidence ``max_j P(j|i)``; the paper's exact weighting of
   matched against mismatched similarity is not reproduced.
5. Expert robustness is the alignment-weighted loss of :func:`alignment_weights` (the scores PruneScope
   already has), not the paper's own noise-robust training.
6. Budget: a few experts of ~a dozen epochs and a few hundred outer iterations (thousands in the paper);
   :mod:`pruning_core.distill.job` plans the iteration count to the user's time budget.
7. The synthetic set starts from the K real pairs that cover the experts' image space (:func:`coverage_start`:
   k-means medoids, likely mismatches passed over), not K random ones (MTT).  A caller may instead start it
   from the K pairs pruning keeps (``start=``: prune, then distil), which is not in the paper either.  Passing
   over likely mismatches is a decision about which image goes with which text, so the correspondence-off
   ablation (``learn_correspondence=False``) takes the medoids as they are, as it takes the diagonal.
8. Evaluation trains every student with one recipe (SGD, momentum 0.9); a distilled set brings its learned
   step converted to that recipe (:func:`distilled_pairs`).
9. The start's correspondence is the experts' logits (above), not a confident diagonal, and η starts at the
   real pairs' step: the experts' knowledge of which texts fit which images reaches the set as soft targets
   (label distillation: Bohdal et al., arXiv 2006.08572; Qin et al., arXiv 2406.10485), whether or not matching
   improves on it.
10. :mod:`pruning_core.distill.job` keeps the matched set only when fresh students trained on it retrieve
    held-out real pairs better than students trained on the start; on two CPU cores, in the minutes a budget
    holds, matching lowers that recall (docs/benchmarks.md, "Soft correspondences from the experts"), so the
    start is what a user usually gets, and the run says so.
11. The start's η is chosen before matching, by the same validation, among ``MDWConfig.start_step_factors`` ×
    the real pairs' step, and matching learns it on from there (MTT learns η by gradient from one initial value;
    here matching would pull it towards the hard-label experts' steps, and soft targets want a larger one).
12. The start's correspondence keeps part of its mass on the given pairing (:func:`given_pairing_mix`; half by
    default, chosen on held-out training pairs; the validation tries any further ``MDWConfig.given_pairing_shares``
    a caller lists): knowledge distillation's mix of hard and soft targets.  The paper starts its correspondence
    at the diagonal and lets matching move it; here matching does not improve the start (departure 10), so the
    mix is set where the start is made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch.func import functional_call

from pruning_core.distill.student import (EVAL_MOMENTUM, EVAL_STEPS, LOGIT_SCALE, REAL_LR, PairSet, Student,
                                          soft_contrastive_loss)
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


@dataclass(frozen=True)
class MDWConfig:
    """Every setting of a distillation run (defaults live here only; all are part of the cache key)."""

    pairs: int = 100
    """K: distilled image–text pairs."""
    experts: int = 3
    expert_epochs: int = 10
    expert_batch: int = 128
    expert_lr: float = 0.05
    """SGD step of the experts (no momentum, as MTT's experts)."""
    syn_steps: int = 10
    """N: student steps on the synthetic set per matching iteration."""
    syn_batch: int = 100
    """Synthetic pairs per student step (all of them when K is smaller)."""
    expert_span: int = 2
    """M: expert epochs the N student steps must cover."""
    max_start_epoch: int = 6
    iterations: int = 400
    """Most outer iterations; the time budget usually stops the run earlier."""
    lr_images: float = 0.01
    lr_texts: float = 0.005
    lr_correspondence: float = 0.05
    lr_step_size: float = 0.01
    """Adam step on log η."""
    learn_correspondence: bool = True
    """False: the ablation, a set that takes every real pair's pairing as given: its start passes over no
    likely mismatch, its correspondence is a fixed diagonal with equal weights (plain MTT on the robust experts)."""
    robust_experts: bool = True
    """False: experts weight every real pair equally."""
    validation_pairs: int = 480
    """Held-out likely-matched real pairs that decide between the start and the matched set (0: keep the
    matched set unvalidated)."""
    validation_seeds: int = 2
    validation_steps: int = EVAL_STEPS
    """Steps of each validation student (the comparison's horizon)."""
    start_step_factors: tuple[float, ...] = (1.0, 2.0, 4.0)
    """Step sizes validation tries for the start, as multiples of the real pairs' step; the start is kept at the
    best.  The experts' soft correspondence spreads each row's target and with it the gradient, so the set
    trains best at a larger step than real pairs do (docs/benchmarks.md, "The set's own step size")."""
    given_pairing_shares: tuple[float, ...] = (0.5,)
    """Shares of the start's correspondence left on the given pairing (:func:`given_pairing_mix`); the first is
    where matching starts and the step sizes are tried, validation then tries any others at the chosen step and
    keeps the best.  One by default: two validation students cannot tell shares apart whose difference is a few
    points (docs/benchmarks.md, "Half the mass on the given pairing")."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.expert_epochs < self.max_start_epoch + self.expert_span:
            raise ValueError(f"expert_epochs {self.expert_epochs}: matching needs at least max_start_epoch + "
                             f"expert_span = {self.max_start_epoch + self.expert_span}")

    def as_dict(self) -> dict:
        return asdict(self)


def alignment_weights(alignment: np.ndarray, z_threshold: float = 3.0, slope: float = 2.0) -> np.ndarray:
    """Per-pair expert weights in (0, 1) from image–caption alignment: ``sigmoid(slope · (z + z_threshold))``.

    ``z`` is the robust z-score of the alignment (median, 1.4826 · MAD), the scale the Overview's
    caption-mismatch finding thresholds at ``z_threshold`` (``OverviewConfig.caption_z``): a typical pair
    weighs ~1, one at the finding's threshold 0.5, one well below it ~0.
    """
    alignment = np.asarray(alignment, dtype=np.float64)
    median = np.median(alignment)
    mad = 1.4826 * np.median(np.abs(alignment - median)) + 1e-12
    z = (alignment - median) / mad
    return (1.0 / (1.0 + np.exp(-slope * (z + z_threshold)))).astype(np.float32)


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def train_expert(images: torch.Tensor, texts: torch.Tensor, weights: Optional[torch.Tensor], config: MDWConfig,
                 seed: int, cancel: Optional[CancelToken] = None,
                 on_epoch: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """One expert run on the real pairs: ``(expert_epochs + 1, P)`` float32 parameters, one row per epoch.

    Plain SGD on weighted InfoNCE (``weights`` None: equal), minibatches without replacement, the
    ragged last batch dropped; row 0 is the random start.
    """
    torch.manual_seed(seed)
    model = Student(int(texts.shape[1]), seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.expert_lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    batch = min(config.expert_batch, n)
    trajectory = [flat_parameters(model).numpy()]
    for epoch in range(config.expert_epochs):
        check(cancel)
        order = torch.randperm(n, generator=generator)
        for b in range(n // batch):
            idx = order[b * batch:(b + 1) * batch]
            w = None if weights is None else weights[idx]
            image_features, text_features = model(images[idx], texts[idx])
            loss = soft_contrastive_loss(image_features, text_features, None, w, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trajectory.append(flat_parameters(model).numpy())
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return np.stack(trajectory).astype(np.float32)


@dataclass
class SyntheticState:
    """The learnable synthetic set and the outer optimiser's state: what a checkpoint holds."""

    images: np.ndarray
    texts: np.ndarray
    correspondence: np.ndarray
    """K × K logits of the joint soft correspondence."""
    log_lr: float
    source_index: np.ndarray
    """The real pairs the synthetic ones started from."""
    iteration: int = 0
    losses: list[float] = field(default_factory=list)


def expert_features(trajectories: np.ndarray, images: torch.Tensor, texts: torch.Tensor,
                    chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Each expert's unit image and text features at its last epoch: two ``(experts, n, d)`` tensors.

    Train-mode batch statistics over chunks of ``chunk`` images, as matching computes features (the
    trajectories hold parameters, not BatchNorm's running statistics).
    """
    student = Student(int(texts.shape[1]), seed=0)
    student.train()
    image_out, text_out = [], []
    with torch.no_grad():
        for trajectory in trajectories:
            torch.nn.utils.vector_to_parameters(torch.from_numpy(np.ascontiguousarray(trajectory[-1])),
                                                student.parameters())
            parts = [student(images[i:i + chunk], texts[i:i + chunk]) for i in range(0, len(images), chunk)]
            image_out.append(torch.cat([p[0] for p in parts]))
            text_out.append(torch.cat([p[1] for p in parts]))
    return torch.stack(image_out), torch.stack(text_out)


def expert_correspondence(image_features: torch.Tensor, text_features: torch.Tensor) -> np.ndarray:
    """K × K correspondence logits the experts agree on: their mean contrastive logit for every image–text pair.

    ``LOGIT_SCALE · mean_e cos(f_e(x_i), g_e(y_j))``, the logits the experts' own loss was trained on, so
    ``softmax`` of them is the experts' joint soft correspondence at the temperature they learned it at.
    """
    mean = torch.einsum("eid,ejd->ij", image_features, text_features) / len(image_features)
    return (LOGIT_SCALE * mean).numpy().astype(np.float32)


def given_pairing_mix(logits: np.ndarray, share: float) -> np.ndarray:
    """Correspondence logits whose joint puts ``share`` of its mass on the given pairing (the diagonal, spread
    evenly) and the rest where ``logits`` put it: ``log(share · I / K + (1 − share) · softmax(logits))``.

    Knowledge distillation's mix of the hard label with the teacher's soft one (Hinton et al., arXiv 1503.02531):
    the experts' correspondence alone teaches what a pair shares with every other text of the set, but gives the
    pair's own caption only ~0.3 of its row, and recall@1 asks for that caption.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"given-pairing share {share}: must lie in [0, 1]")
    k = logits.shape[0]
    joint = correspondence_targets(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy().astype(np.float64)
    mixed = share * np.eye(k) / k + (1.0 - share) * joint
    return np.log(np.maximum(mixed, np.finfo(np.float32).tiny)).astype(np.float32)


def coverage_start(image_features: torch.Tensor, weights: Optional[np.ndarray], k: int, seed: int) -> np.ndarray:
    """K real pairs that cover the experts' image space: the medoid of each of K k-means clusters.

    Clusters are fitted to the experts' image features side by side; each cluster contributes the member
    nearest its centre among the likely-matched pairs (alignment weight ≥ 0.5, :func:`alignment_weights`),
    or among all its members when it has none (``weights`` None: every pair counts as matched).  Sorted indices.
    """
    from sklearn.cluster import KMeans

    features = torch.cat(list(image_features), dim=1).numpy().astype(np.float64)
    if k < 2 or k > len(features):
        raise ValueError(f"--pairs {k}: need between 2 and {len(features)} (the dataset's usable pairs)")
    kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(features)
    distance = ((features - kmeans.cluster_centers_[kmeans.labels_]) ** 2).sum(axis=1)
    picked = []
    for cluster in range(k):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        matched = members if weights is None else members[weights[members] >= 0.5]
        pool = matched if len(matched) else members
        picked.append(pool[np.argmin(distance[pool])])
    return np.sort(np.asarray(picked, dtype=np.int64))


def initial_state(images: np.ndarray, texts: np.ndarray, index: np.ndarray,
                  correspondence: np.ndarray) -> SyntheticState:
    """The real pairs ``index`` as the start, with ``correspondence`` logits (K × K) and the real pairs' step.

    η starts where a real pair's step is: :data:`student.REAL_LR` under momentum, ``REAL_LR / (1 − β)`` in
    plain SGD (what :func:`distilled_pairs` converts back), so an unmatched set trains exactly as real pairs.
    """
    index = np.asarray(index, dtype=np.int64)
    k = len(index)
    if len(np.unique(index)) != k or correspondence.shape != (k, k):
        raise ValueError(f"a start of {len(np.unique(index))} distinct pairs with a {correspondence.shape} "
                         "correspondence")
    return SyntheticState(images=np.array(images[index], dtype=np.float32),
                          texts=np.array(texts[index], dtype=np.float32),
                          correspondence=np.array(correspondence, dtype=np.float32),
                          log_lr=real_log_step(1.0), source_index=index)


def real_log_step(factor: float) -> float:
    """log η at ``factor`` times the real pairs' step, in the plain-SGD terms η is learned in (:func:`initial_state`)."""
    return float(math.log(factor * REAL_LR / (1.0 - EVAL_MOMENTUM)))


def correspondence_targets(logits: torch.Tensor) -> torch.Tensor:
    """The joint soft correspondence ``P = softmax`` over all K² logits (rows: images, columns: texts)."""
    return torch.softmax(logits.reshape(-1), dim=0).reshape(logits.shape)


def confidence_weights(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max_j P(j|i), max_i P(i|j))``, held constant: the correspondence-weighted updates' pair weights."""
    joint = joint.detach()
    rows = (joint / joint.sum(dim=1, keepdim=True)).max(dim=1).values
    cols = (joint / joint.sum(dim=0, keepdim=True)).max(dim=0).values
    return rows, cols


class TrajectoryMatcher:
    """Fits a :class:`SyntheticState` to expert trajectories (sklearn-like: state learned by :meth:`step`)."""

    def __init__(self, config: MDWConfig, trajectories: np.ndarray, state: SyntheticState,
                 optimizer_state: Optional[dict] = None) -> None:
        if trajectories.shape[1] < config.max_start_epoch + config.expert_span + 1:
            raise ValueError(f"experts have {trajectories.shape[1] - 1} epochs; matching needs "
                             f"max_start_epoch + expert_span = {config.max_start_epoch + config.expert_span}")
        self.config = config
        self.trajectories = torch.from_numpy(np.ascontiguousarray(trajectories))
        self.state = state
        self.images = torch.tensor(state.images, requires_grad=True)
        self.texts = torch.tensor(state.texts, requires_grad=True)
        self.correspondence = torch.tensor(state.correspondence, requires_grad=config.learn_correspondence)
        self.log_lr = torch.tensor(state.log_lr, requires_grad=True)
        groups = [{"params": [self.images], "lr": config.lr_images},
                  {"params": [self.texts], "lr": config.lr_texts},
                  {"params": [self.log_lr], "lr": config.lr_step_size}]
        if config.learn_correspondence:
            groups.append({"params": [self.correspondence], "lr": config.lr_correspondence})
        self.optimizer = torch.optim.Adam(groups)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.student = Student(int(state.texts.shape[1]), seed=0)
        self.student.train()
        self._names = [n for n, _ in self.student.named_parameters()]
        self._shapes = [p.shape for _, p in self.student.named_parameters()]
        self._sizes = [p.numel() for _, p in self.student.named_parameters()]
        self._buffers = {n: b.clone() for n, b in self.student.named_buffers()}
        if sum(self._sizes) != self.trajectories.shape[2]:
            raise ValueError("expert trajectories were saved for a different student (parameter count differs)")

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat parameter vector (a trajectory row) as the student's named parameter tensors (views of it)."""
        return {n: t.view(s) for n, t, s in zip(self._names, torch.split(flat, self._sizes), self._shapes)}

    def features(self, flat: torch.Tensor, images: torch.Tensor, texts: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's unit image and text features at parameters ``flat`` (train mode: batch statistics)."""
        buffers = {n: b.clone() for n, b in self._buffers.items()}
        return functional_call(self.student, ({**self.unflatten(flat), **buffers},), (images, texts))

    def synthetic_loss(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``L_S`` at parameters ``flat`` on the synthetic pairs ``idx``, differentiable in both."""
        image_features, text_features = self.features(flat, self.images[idx], self.texts[idx])
        if self.config.learn_correspondence:
            joint = correspondence_targets(self.correspondence[idx][:, idx])
            rows, cols = confidence_weights(joint)
            return soft_contrastive_loss(image_features, text_features, joint, rows, cols)
        return soft_contrastive_loss(image_features, text_features)

    def _batches(self, rng: np.random.Generator) -> list[torch.Tensor]:
        k = len(self.state.images)
        size = min(self.config.syn_batch, k)
        return [torch.from_numpy(np.sort(rng.choice(k, size=size, replace=False))) for _ in range(self.config.syn_steps)]

    def draw(self) -> tuple[int, int, list[torch.Tensor]]:
        """The next iteration's expert, start epoch and student batches: a function of the iteration only,
        so a run resumed from a checkpoint draws what an uninterrupted one would."""
        rng = np.random.default_rng([self.config.seed, self.state.iteration])
        expert = int(rng.integers(len(self.trajectories)))
        start = int(rng.integers(self.config.max_start_epoch + 1))
        return expert, start, self._batches(rng)

    def matching_loss(self, expert: int, start: int, batches: list[torch.Tensor]) -> torch.Tensor:
        """``L_match`` for one expert segment, differentiable in the synthetic set."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        begin = self.trajectories[expert, start]
        target = self.trajectories[expert, start + self.config.expert_span]
        flat = begin.clone().requires_grad_(True)
        lr = self.log_lr.exp()
        # open_clip's attention pooling uses scaled_dot_product_attention, whose fused CPU kernel has no
        # double backward; the math kernel computes the same attention and differentiates twice.
        with sdpa_kernel(SDPBackend.MATH):
            for idx in batches:
                grad = torch.autograd.grad(self.synthetic_loss(flat, idx), flat, create_graph=True)[0]
                flat = flat - lr * grad
        return ((flat - target) ** 2).sum() / ((begin - target) ** 2).sum()

    def step(self, draw: Optional[tuple[int, int, list[torch.Tensor]]] = None) -> float:
        """One outer iteration: ``L_match`` on a drawn segment, then one Adam step on the synthetic set."""
        expert, start, batches = draw if draw is not None else self.draw()
        return self.apply(self.matching_loss(expert, start, batches))

    def apply(self, loss: torch.Tensor) -> float:
        """One Adam step on the synthetic set down ``loss`` (any objective differentiable in it), counted as an
        iteration."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        self.state.iteration += 1
        self.state.losses.append(value)
        self._sync()
        return value

    def _sync(self) -> None:
        self.state.images = self.images.detach().numpy().copy()
        self.state.texts = self.texts.detach().numpy().copy()
        self.state.correspondence = self.correspondence.detach().numpy().copy()
        self.state.log_lr = float(self.log_lr.detach())

    def fit(self, iterations: int, *, expected: Optional[int] = None, deadline: Optional[Callable[[], bool]] = None,
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
            on_iteration: Optional[Callable[["TrajectoryMatcher"], None]] = None) -> SyntheticState:
        """Outer iterations until ``iterations`` are done, ``deadline()`` says time is up, or cancelled.

        ``expected``: the iterations the plan expects by the deadline (what progress counts towards).
        """
        while self.state.iteration < iterations:
            check(cancel)
            if deadline is not None and deadline():
                break
            loss = self.step()
            report(progress, "distilling", self.state.iteration, max(expected or iterations, self.state.iteration),
                   f"matching loss {loss:.3f} (1.0 = no closer than the segment's start)")
            if on_iteration is not None:
                on_iteration(self)
        return self.state


def distilled_pairs(state: SyntheticState, *, learn_correspondence: bool) -> PairSet:
    """What a student trains on from a distilled set: its learned correspondence, weights and step size.

    The set was distilled for plain SGD at step η; the comparison trains every student with momentum β
    (:data:`pruning_core.distill.student.EVAL_MOMENTUM`), whose steady-state step is lr / (1 − β), so the
    set trains at lr = η (1 − β): the same effective step.  Departure 8: MTT evaluates at η itself with momentum.
    """
    images = torch.from_numpy(np.ascontiguousarray(state.images))
    texts = torch.from_numpy(np.ascontiguousarray(state.texts))
    lr = math.exp(state.log_lr) * (1.0 - EVAL_MOMENTUM)
    if not learn_correspondence:
        return PairSet(images, texts, lr=lr)
    joint = correspondence_targets(torch.from_numpy(state.correspondence))
    rows, _ = confidence_weights(joint)
    return PairSet(images, texts, lr=lr, targets=joint / joint.sum(dim=1, keepdim=True),
                   weights=rows)
