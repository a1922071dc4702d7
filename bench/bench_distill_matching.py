"""Does trajectory matching make the distilled set teach more? The set's value along its matching iterations.

    python bench/bench_distill_matching.py --iterations 300 --every 100                      # MDWConfig defaults
    python bench/bench_distill_matching.py --expert-batch 512 --expert-lr 0.2 --syn-steps 5 \
        --iterations 400 --every 200 --horizons 100,300                                       # low-noise experts
    python bench/bench_distill_matching.py ... --augment                                      # flips and shifts

``bench_distill.py`` compares finished sets under a time budget; this bench asks why they tie random pairs.
It runs :class:`pruning_core.distill.mdw.TrajectoryMatcher` for a fixed number of iterations (no budget) and,
every ``--every`` iterations, trains fresh students on the set so far (3 seeds, the comparison's recipe,
``--horizons`` steps each) and prints their image→text recall@1 beside the matching loss.  Beside it, once: the
same students on the set's starting pairs under the real-pair recipe ("random") and on PruneScope's cleanest
K, and the cosine between the expert's move over one matched segment and the move N student steps on the
starting set make (how much of the expert's path the synthetic data could follow at all).

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
from pruning_core.distill.job import distill_inputs, expert_trajectories  # noqa: E402
from pruning_core.distill.mdw import MDWConfig, TrajectoryMatcher, distilled_pairs, initial_state  # noqa: E402
from pruning_core.distill.student import PairSet, retrieval_recall, train_student  # noqa: E402
from pruning_core.runtime.progress import TqdmProgress  # noqa: E402
from pruning_core.scoring.pipeline import clip_score_table  # noqa: E402

SHIFT = 4


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
                grad = torch.autograd.grad(matcher._inner_loss(flat, idx), flat)[0]
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
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.augment:
        augment_every_student()
    config = replace(MDWConfig(), expert_batch=args.expert_batch, expert_lr=args.expert_lr, syn_steps=args.syn_steps,
                     lr_images=args.lr_images)
    horizons = [int(h) for h in args.horizons.split(",")]
    seeds = tuple(range(args.seeds))
    batch = CompareConfig().batch_size
    assets, store, clip, dataset, inputs = setup(args.variant)
    test = distill_inputs(load_dataset(assets.test_manifest), clip, store)
    began = time.perf_counter()
    trajectories = expert_trajectories(inputs, config, store, progress=TqdmProgress())
    print(f"experts {trajectories.shape[0]} x {trajectories.shape[1] - 1} epochs (batch {config.expert_batch}, "
          f"lr {config.expert_lr}): {time.perf_counter() - began:.0f} s (0 when cached)", flush=True)
    matcher = TrajectoryMatcher(config, trajectories, initial_state(inputs.images.numpy(), inputs.texts.numpy(), config))
    print(f"direction cosine, expert move vs {config.syn_steps} steps on the starting set, start epochs 0/3/6: "
          f"{direction_cosines(matcher, config)}", flush=True)
    start = torch.from_numpy(matcher.state.source_index)
    cleanest = torch.from_numpy(cleanest_rows(clip_score_table(dataset, clip, store), inputs, config.pairs))
    real_lr = CompareConfig().real_lr
    for name, index in (("random (the starting pairs)", start), ("cleanest", cleanest)):
        pairs = PairSet(inputs.images[index], inputs.texts[index], lr=real_lr)
        print(f"{name}, real-pair recipe: i2t@1 {recall_line(pairs, horizons, seeds, test, batch)}", flush=True)
    matching_s = 0.0
    while True:
        if matcher.state.iteration % args.every == 0 or matcher.state.iteration == args.iterations:
            pairs = distilled_pairs(matcher.state, learn_correspondence=config.learn_correspondence)
            losses = matcher.state.losses[-20:]
            print(f"iteration {matcher.state.iteration} ({matching_s:.0f} s of matching): "
                  f"matching loss (last 20) {np.mean(losses) if losses else float('nan'):.3f}, "
                  f"step {np.exp(matcher.state.log_lr):.4f}; distilled i2t@1 {recall_line(pairs, horizons, seeds, test, batch)}", flush=True)
        if matcher.state.iteration >= args.iterations:
            break
        clock = time.perf_counter()
        matcher.step()
        matching_s += time.perf_counter() - clock


if __name__ == "__main__":
    main()
