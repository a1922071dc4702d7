"""Does trajectory matching make the distilled set teach more? The set's value along its matching iterations.

    python bench/bench_distill_matching.py --iterations 300 --every 100                      # MDWConfig defaults
    python bench/bench_distill_matching.py --expert-batch 512 --expert-lr 0.2 --syn-steps 5 \
        --iterations 400 --every 200 --horizons 100,300                                       # low-noise experts
    python bench/bench_distill_matching.py ... --augment                                      # flips and shifts
    python bench/bench_distill_matching.py --objective gradient|regression --iterations 1500 --every 500

``bench_distill.py`` compares finished sets under a time budget; this bench asks what the matching adds to its start.
It runs :class:`pruning_core.distill.mdw.TrajectoryMatcher` for a fixed number of iterations (no budget) and,
every ``--every`` iterations, trains fresh students on the set so far (3 seeds, the comparison's recipe,
``--horizons`` steps each) and prints their image→text recall@1 beside the matching loss.  Beside it, once: the
same students on the set's starting pairs under the real-pair recipe (a fixed diagonal) and on PruneScope's cleanest
K, and the cosine between the expert's move over one matched segment and the move N student steps on the
starting set make (how much of the expert's path the synthetic data could follow at all).

``--objective`` (research only, not in the product) swaps MTT's objective for one of two that need no expert and
look at the states a student trained on the set itself passes through (the states evaluation passes through, over its
whole 300-step horizon, where MTT's segments cover the experts' first epochs):

* ``gradient``: dataset condensation by gradient matching (DC, Zhao et al., ICLR 2021).  A student trains on the set
  with the comparison's recipe; every ``MATCH_EVERY`` of its steps, the set's gradient at the student's state is
  pulled towards the gradient of an alignment-weighted batch of real pairs (1 − cosine per output unit, summed
  over weight tensors, DC's distance).
* ``regression``: neural feature regression (FRePo, Zhou et al., NeurIPS 2022) for pairs.  A pool of students
  trains on the set at staggered ages; at one member's state, ridge regression from the set's image features to
  its texts (mixed by the learned correspondence; centred and unit text vectors) must retrieve a real batch's
  texts from their images (alignment-weighted InfoNCE, the students' own ``soft_contrastive_loss``).  No
  unrolling: gradients reach the pixels through one forward pass.

Both keep MDW's learned correspondence and the same Adam steps on pixels, texts and correspondence; the set trains
students at the real pairs' lr (no learned step).

``--augment`` (research only, not in the product): every train-mode forward pass of every student sees its
images flipped left–right at random and shifted by up to 4 px, the cheap half of the differentiable
augmentation MTT distils and evaluates with.  Shape, colour and size carry the demo's captions, so no colour
or scale change.  Experts are read from the cache as they are (trained without it).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_distill import setup  # noqa: E402
from pruning_core.data.datasets import load_dataset  # noqa: E402
from pruning_core.distill import student as student_module  # noqa: E402
from pruning_core.distill.compare import CompareConfig, cleanest_rows  # noqa: E402
from pruning_core.distill.job import distill_inputs, expert_trajectories, starting_state  # noqa: E402
from pruning_core.distill.mdw import (MDWConfig, TrajectoryMatcher, alignment_weights,  # noqa: E402
                                      correspondence_targets, distilled_pairs, flat_parameters)
from pruning_core.distill.student import (EVAL_MOMENTUM, PairSet, Student, retrieval_recall,  # noqa: E402
                                          soft_contrastive_loss, train_student)
from pruning_core.runtime.progress import TqdmProgress  # noqa: E402
from pruning_core.scoring.pipeline import clip_score_table  # noqa: E402

SHIFT = 4
MATCH_EVERY = 5
"""Student steps between two gradient-matching updates."""
REAL_BATCH = 256
POOL = 4
"""Students in the feature-regression pool."""
RIDGE = 1e-2
"""Ridge of the feature regression, relative to the mean of the kernel's diagonal."""


def augmented(images: torch.Tensor) -> torch.Tensor:
    """Random left–right flips per image and one random shift of up to ``SHIFT`` px per batch (edges replicated)."""
    flip = torch.rand(images.shape[0]) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(3), images)
    padded = F.pad(images, (SHIFT,) * 4, mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * SHIFT + 1, (2,)))
    return padded[:, :, dy:dy + images.shape[2], dx:dx + images.shape[3]]


def augment_every_student() -> None:
    """Patch :class:`Student` so that in train mode it sees :func:`augmented` images (this process only)."""
    plain = student_module.Student.forward

    def forward(self, images, texts):
        return plain(self, augmented(images) if self.training else images, texts)

    student_module.Student.forward = forward


class FlatStudent:
    """A fresh student training on the synthetic set with the comparison's recipe, held as one flat vector.

    ``train_student``'s update (full batch of the K pairs, SGD with momentum, cosine decay over ``horizon`` steps)
    written out on the vector, so an objective can take gradients at whatever state it is in; after ``horizon``
    steps it restarts from the next seed's initialisation.
    """

    def __init__(self, matcher: TrajectoryMatcher, seed: int, lr: float, horizon: int, age: int = 0) -> None:
        self.matcher, self.seed, self.lr, self.horizon = matcher, seed, lr, horizon
        self.restart()
        for _ in range(age):
            self.step()

    def restart(self) -> None:
        self.flat = flat_parameters(Student(int(self.matcher.texts.shape[1]), self.seed))
        self.velocity = torch.zeros_like(self.flat)
        self.age = 0

    def step(self) -> None:
        flat = self.flat.clone().requires_grad_(True)
        everything = torch.arange(len(self.matcher.images))
        grad = torch.autograd.grad(self.matcher.synthetic_loss(flat, everything), flat)[0]
        self.velocity = EVAL_MOMENTUM * self.velocity + grad
        self.flat = self.flat - self.lr * 0.5 * (1 + np.cos(np.pi * self.age / self.horizon)) * self.velocity
        self.age += 1
        if self.age == self.horizon:
            self.seed += 1
            self.restart()


class RealPairs:
    """The real pairs an objective pulls the set towards, alignment-weighted like MDW's experts."""

    def __init__(self, inputs, seed: int) -> None:
        self.images, self.texts = inputs.images, inputs.texts
        self.weights = torch.from_numpy(alignment_weights(inputs.alignment))
        self.seed = seed

    def batch(self, iteration: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, iteration])
        return torch.from_numpy(rng.choice(len(self.images), size=REAL_BATCH, replace=False))


class GradientMatching:
    """DC's objective along a student trained on the set itself (see the module docstring)."""

    def __init__(self, matcher: TrajectoryMatcher, real: RealPairs, lr: float, horizon: int) -> None:
        self.matcher, self.real = matcher, real
        self.student = FlatStudent(matcher, seed=1000, lr=lr, horizon=horizon)

    def step(self) -> float:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        matcher = self.matcher
        idx = self.real.batch(matcher.state.iteration)
        flat = self.student.flat.clone().requires_grad_(True)
        weights = self.real.weights[idx]
        with sdpa_kernel(SDPBackend.MATH):
            image_features, text_features = matcher.features(flat, self.real.images[idx], self.real.texts[idx])
            real = torch.autograd.grad(soft_contrastive_loss(image_features, text_features, None, weights, weights),
                                       flat)[0]
            synthetic = torch.autograd.grad(matcher.synthetic_loss(flat, torch.arange(len(matcher.images))), flat,
                                            create_graph=True)[0]
            distance = sum((1 - F.cosine_similarity(s.reshape(s.shape[0], -1), r.reshape(r.shape[0], -1), dim=1,
                                                    eps=1e-8)).sum()
                           for s, r in zip(matcher.unflatten(synthetic).values(), matcher.unflatten(real).values())
                           if s.dim() > 1)
            value = matcher.apply(distance)
            for _ in range(MATCH_EVERY):
                self.student.step()
        return value


class FeatureRegression:
    """FRePo's objective for pairs over a pool of students trained on the set (see the module docstring)."""

    def __init__(self, matcher: TrajectoryMatcher, real: RealPairs, lr: float, horizon: int) -> None:
        self.matcher, self.real = matcher, real
        self.pool = [FlatStudent(matcher, seed=2000 + 100 * i, lr=lr, horizon=horizon, age=i * horizon // POOL)
                     for i in range(POOL)]
        self.centre = real.texts.mean(dim=0)

    def texts(self, texts: torch.Tensor) -> torch.Tensor:
        return F.normalize(texts - self.centre, dim=-1)

    def step(self) -> float:
        matcher = self.matcher
        member = self.pool[matcher.state.iteration % POOL]
        idx = self.real.batch(matcher.state.iteration)
        synthetic = matcher.features(member.flat, matcher.images, matcher.texts)[0]
        with torch.no_grad():
            real = matcher.features(member.flat, self.real.images[idx], self.real.texts[idx])[0]
        targets = self.texts(matcher.texts)
        if matcher.config.learn_correspondence:
            joint = correspondence_targets(matcher.correspondence)
            targets = (joint / joint.sum(dim=1, keepdim=True)) @ targets
        kernel = synthetic @ synthetic.t()
        ridge = RIDGE * kernel.diagonal().mean() * torch.eye(len(kernel))
        predicted = real @ synthetic.t() @ torch.linalg.solve(kernel + ridge, targets)
        weights = self.real.weights[idx]
        loss = soft_contrastive_loss(F.normalize(predicted, dim=-1), self.texts(self.real.texts[idx]), None, weights,
                                     weights)
        value = matcher.apply(loss)
        member.step()
        return value


def recall_line(pairs: PairSet, horizons: list[int], seeds: tuple[int, ...], test, batch: int) -> str:
    """i2t@1 mean ± standard error over ``seeds`` after each horizon's student steps on ``pairs``, as one line."""
    cells = []
    for steps in horizons:
        values = [retrieval_recall(train_student(pairs, steps=steps, batch_size=batch, seed=s), test.images,
                                   test.texts, test.captions)["i2t@1"] for s in seeds]
        cells.append(f"{steps} steps {np.mean(values):.3f} ± {np.std(values, ddof=1) / np.sqrt(len(values)):.3f}")
    return ", ".join(cells)


def direction_cosines(matcher: TrajectoryMatcher, config: MDWConfig, starts=(0, 3, 6)) -> list[float]:
    """cos(expert 0's move over ``expert_span`` epochs, N plain SGD steps on the starting set), per start epoch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = []
    for start in starts:
        begin = matcher.trajectories[0, start]
        target = matcher.trajectories[0, start + config.expert_span]
        flat = begin.clone()
        with sdpa_kernel(SDPBackend.MATH):
            for idx in matcher.draw()[2]:
                flat.requires_grad_(True)
                grad = torch.autograd.grad(matcher.synthetic_loss(flat, idx), flat)[0]
                flat = (flat - config.expert_lr * grad).detach()
        out.append(round(float(F.cosine_similarity(flat - begin, target - begin, dim=0)), 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["demo", "shuffle30"], default="demo")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--expert-batch", type=int, default=MDWConfig.expert_batch)
    parser.add_argument("--expert-lr", type=float, default=MDWConfig.expert_lr)
    parser.add_argument("--syn-steps", type=int, default=MDWConfig.syn_steps)
    parser.add_argument("--lr-images", type=float, default=MDWConfig.lr_images)
    parser.add_argument("--horizons", default="300", help="student steps to evaluate at (comma-separated)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--objective", choices=["trajectory", "gradient", "regression"], default="trajectory")
    parser.add_argument("--no-correspondence", action="store_true", help="a fixed diagonal (MDW's ablation)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.augment:
        augment_every_student()
    config = replace(MDWConfig(), expert_batch=args.expert_batch, expert_lr=args.expert_lr, syn_steps=args.syn_steps,
                     lr_images=args.lr_images, learn_correspondence=not args.no_correspondence)
    horizons = [int(h) for h in args.horizons.split(",")]
    seeds = tuple(range(args.seeds))
    batch = CompareConfig().batch_size
    assets, store, clip, dataset, inputs = setup(args.variant)
    test = distill_inputs(load_dataset(assets.test_manifest), clip, store)
    began = time.perf_counter()
    trajectories = expert_trajectories(inputs, config, store, progress=TqdmProgress())
    print(f"experts {trajectories.shape[0]} x {trajectories.shape[1] - 1} epochs (batch {config.expert_batch}, "
          f"lr {config.expert_lr}): {time.perf_counter() - began:.0f} s (0 when cached)", flush=True)
    state = starting_state(inputs, trajectories, config)
    real_lr = CompareConfig().real_lr
    matcher = TrajectoryMatcher(config, trajectories, state)
    objective = matcher
    if args.objective == "trajectory":
        print(f"direction cosine, expert move vs {config.syn_steps} steps on the starting set, start epochs 0/3/6: "
              f"{direction_cosines(matcher, config)}", flush=True)
    else:
        kind = GradientMatching if args.objective == "gradient" else FeatureRegression
        objective = kind(matcher, RealPairs(inputs, config.seed), lr=real_lr, horizon=CompareConfig().steps)
    start = torch.from_numpy(matcher.state.source_index)
    cleanest = torch.from_numpy(cleanest_rows(clip_score_table(dataset, clip, store), inputs, config.pairs))
    for name, index in (("the starting pairs", start), ("cleanest", cleanest)):
        pairs = PairSet(inputs.images[index], inputs.texts[index], lr=real_lr)
        print(f"{name}, real-pair recipe: i2t@1 {recall_line(pairs, horizons, seeds, test, batch)}", flush=True)
    matching_s = 0.0
    while True:
        if matcher.state.iteration % args.every == 0 or matcher.state.iteration == args.iterations:
            pairs = distilled_pairs(matcher.state, learn_correspondence=config.learn_correspondence)
            losses = matcher.state.losses[-20:]
            print(f"iteration {matcher.state.iteration} ({matching_s:.0f} s of matching): "
                  f"matching loss (last 20) {np.mean(losses) if losses else float('nan'):.3f}, "
                  f"step {np.exp(matcher.state.log_lr):.4f}; "
                  f"distilled i2t@1 {recall_line(pairs, horizons, seeds, test, batch)}", flush=True)
        if matcher.state.iteration >= args.iterations:
            break
        clock = time.perf_counter()
        objective.step()
        matching_s += time.perf_counter() - clock


if __name__ == "__main__":
    main()
