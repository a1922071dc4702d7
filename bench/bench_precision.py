"""bf16 autocast against fp32 for the proxy, side by side in one run: speed and detection quality.

    python bench/bench_precision.py                 # training images/s per setting + the demo's AUROC

Speed: the real ProxyTrainer on random images, per setting, fp32 and bf16 steps interleaved
(so load on a shared machine hits both alike), median step.  Quality: the demo's dynamics step
(ResNet-9 width 16 at 16 px, 12 epochs, no cross-fitting) once per precision; AUROC of every score
against the injected label noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.runtime.devices import cpu_has_bf16  # noqa: E402
from pruning_core.dynamics import dynamics_scores, train_and_record  # noqa: E402
from pruning_core.dynamics.config import DynamicsConfig  # noqa: E402
from pruning_core.dynamics.trainer import proxy_trainer  # noqa: E402
from pruning_core.scoring.detection import evaluate_scores  # noqa: E402

SETTINGS = ((16, 16, 256), (32, 64, 512))  # (image_size, width, batch): the planner's CPU rung, the full size


def step_seconds(size: int, width: int, batch: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * 2, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=batch * 2)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    kw = dict(arch="resnet9", epochs=DynamicsConfig.epochs, seed=0, device="cpu", width=width, batch_size=batch,
              num_classes=10)
    with proxy_trainer(x, y, precision="fp32", **kw) as f32, proxy_trainer(x, y, precision="bf16", **kw) as b16:
        idx = torch.arange(batch)
        for i in range(steps + 2):
            for name, trainer in (("fp32", f32), ("bf16", b16)):
                t0 = time.perf_counter()
                trainer.train_epoch(idx)
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
    return {name: batch / float(np.median(t)) for name, t in times.items()}


def demo_quality(epochs: int) -> pd.DataFrame:
    from pruning_core.data.datasets import load_dataset
    from pruning_core.demo.dataset import ensure_demo
    from pruning_core.data.images import load_image_array

    assets = ensure_demo()
    dataset = load_dataset(assets.manifest)
    truth = pd.read_csv(assets.ground_truth).set_index("path")["label_noisy"]
    noisy = truth.reindex(dataset.samples["path"]).to_numpy(bool)
    x, _ = load_image_array(dataset.abspaths(), 16)
    rows = []
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        rec = train_and_record(x, dataset.label_ids, arch="resnet9", epochs=epochs, seed=0, device="cpu", width=16,
                               batch_size=128, num_classes=len(dataset.classes), precision=precision)
        seconds = time.perf_counter() - t0
        frame, infos = dynamics_scores(rec, dynunc_window=DynamicsConfig.dynunc_window)
        metrics = evaluate_scores(frame, infos, noisy).set_index("score")["auroc"]
        rows.append({"precision": precision, "seconds": seconds, **metrics.to_dict()})
    return pd.DataFrame(rows).set_index("precision")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    print(f"threads {torch.get_num_threads()}, cpu bf16 hardware: {cpu_has_bf16()}, load {os.getloadavg()[0]:.2f}")
    for size, width, batch in SETTINGS:
        rates = step_seconds(size, width, batch, args.steps)
        print(f"width {width} at {size} px, batch {batch}: fp32 {rates['fp32']:,.0f} img/s, bf16 {rates['bf16']:,.0f} "
              f"img/s, ratio {rates['bf16'] / rates['fp32']:.2f}x")
    quality = demo_quality(args.epochs)
    cols = ["seconds", "dynamics.final_loss", "dynamics.aum", "dynamics.confidence", "dynamics.el2n"]
    print(quality[cols].to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
