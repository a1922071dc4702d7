"""Which noise detectors pay on class-dependent noise, per second of 2-core training (issue 22 research).

One proxy run per (manifest, training variant, setting) records the *full* softmax of every sample after
every epoch (E x N x C, float16), so every post-hoc detector (early-learning loss, snapshot ensembles,
class-conditional normalisation, the noise posterior, cleanlab's class-adjusted quality, combinations) is
read from the same run and compared on equal training time.  Runs are cached under ``--work``::

    python bench/bench_noise_detectors.py train_asym40.csv --size 24 --epochs 8
    python bench/bench_noise_detectors.py train_asym40.csv --size 24 --epochs 8 --variant ls0.3
    python bench/bench_noise_detectors.py train_asym40.csv --size 24 --epochs 8 --variant mixup0.5

Variants: ``plain`` (the product's proxy), ``ls<eps>`` (label smoothing), ``mixup<alpha>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar_data import DATA, unpack  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from pruning_core.data.images import load_image_array  # noqa: E402
from pruning_core.dynamics.trainer import proxy_trainer  # noqa: E402
from pruning_core.runtime.devices import autocast  # noqa: E402


def images(manifest: pd.DataFrame, root: Path, size: int, work: Path) -> np.ndarray:
    """The manifest's images decoded at ``size`` (cached by size: every manifest lists the same 50,000 files)."""
    path = work / f"images{size}.npy"
    order = work / "paths.txt"
    paths = manifest["path"].tolist()
    if path.is_file() and order.read_text().splitlines() == paths:
        return np.load(path)
    x, failed = load_image_array([str(root / p) for p in paths], size)
    assert not failed, failed
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    order.write_text("\n".join(paths))
    return x


def train_recording_softmax(x: np.ndarray, y: np.ndarray, *, epochs: int, width: int, seed: int,
                            variant: str) -> tuple[np.ndarray, float]:
    """(E, N, C) float16 softmax after every epoch and the training seconds (recording excluded)."""
    smoothing = float(variant[2:]) if variant.startswith("ls") else 0.0
    alpha = float(variant[5:]) if variant.startswith("mixup") else 0.0
    with proxy_trainer(x, y, seed=seed, arch="resnet9", epochs=epochs, batch_size=256, width=width,
                       precision="auto", label_smoothing=smoothing) as t:
        out = np.empty((epochs, t.n, t.num_classes), dtype=np.float16)
        beta = torch.distributions.Beta(alpha, alpha) if alpha else None
        for epoch in range(epochs):
            if beta is None:
                t.train_epoch()
            else:
                mixup_epoch(t, beta)
            for pos, logits in t.logits():
                out[epoch, pos] = torch.softmax(logits, 1).cpu().numpy()
            print(f"  epoch {epoch + 1}/{epochs}: {t.train_seconds:.0f} s training", flush=True)
        return out, t.train_seconds


def mixup_epoch(t, beta: torch.distributions.Beta) -> None:
    """One epoch of mixup (Zhang et al.): convex mixes of two augmented images and of their labels' losses."""
    t0 = time.perf_counter()
    t.threads.apply()
    t.model.train()
    perm = torch.randperm(t.n, generator=t.gen)
    for s in range(t.n // t.batch_size):
        b = perm[s * t.batch_size:(s + 1) * t.batch_size]
        xb = t.data.augmented(b, t.gen)
        lam = float(beta.sample())
        mix = torch.randperm(b.shape[0], generator=t.gen)
        with autocast(t.dev, t.precision):
            out = t.model(lam * xb + (1 - lam) * xb[mix]).float()
        loss = lam * F.cross_entropy(out, t.y[b]) + (1 - lam) * F.cross_entropy(out, t.y[b][mix])
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.opt.step()
        t.sched.step()
    t.train_seconds += time.perf_counter() - t0


def detectors(probs: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate score (high = more likely mislabelled) from the per-epoch softmax."""
    from cleanlab.count import estimate_joint
    from cleanlab.rank import get_label_quality_scores

    p = probs.astype(np.float64).clip(1e-7, 1)
    e, n, c = p.shape
    rows = np.arange(n)
    logp = np.log(p)
    given = logp[:, rows, y]  # (E, N)
    other = logp.copy()
    other[:, rows, y] = -np.inf
    margin = given - other.max(axis=2)
    out: dict[str, np.ndarray] = {}
    for k in range(e):
        out[f"loss@{k + 1}"] = -given[k]
    out["aum"] = -margin.mean(0)
    out["confidence"] = -np.exp(given).mean(0)
    half = p[e // 2:].mean(0)
    last3 = p[max(0, e - 3):].mean(0)
    for name, pbar in {"final": p[-1], "mean_half": half, "mean_last3": last3}.items():
        pbar = pbar / pbar.sum(1, keepdims=True)
        out[f"{name}.loss"] = -np.log(pbar[rows, y])
        out[f"{name}.cl_self"] = -get_label_quality_scores(y, pbar, method="self_confidence")
        out[f"{name}.cl_margin"] = -get_label_quality_scores(y, pbar, method="normalized_margin")
        out[f"{name}.cl_self_adj"] = -get_label_quality_scores(y, pbar, method="self_confidence", adjust_pred_probs=True)
        joint = estimate_joint(y, pbar)  # [given, true]
        noise = joint / joint.sum(0, keepdims=True)  # P(given | true), column-stochastic
        weighted = pbar * noise[y].reshape(n, c)  # p_k * P(given=y_i | true=k)
        out[f"{name}.posterior"] = 1 - weighted[rows, y] / weighted.sum(1)
        out.update({f"{name}.{k}": v for k, v in posterior_variants(pbar, y, joint).items()})
        out[f"{name}.loss_classz"] = class_z(out[f"{name}.loss"], y)
    out["loss_classz"] = class_z(-given[-1], y)
    return out


def posterior_variants(p: np.ndarray, y: np.ndarray, joint: np.ndarray) -> dict[str, np.ndarray]:
    """The noise posterior with the clean-class probabilities deconvolved, and re-estimated by EM."""
    n, c = p.shape
    rows = np.arange(n)
    given_true = joint / joint.sum(0, keepdims=True)  # P(given=j | true=k) as [j, k]
    trans = given_true.T  # [true k, given j], row-stochastic
    clean = np.clip(p @ np.linalg.pinv(trans), 1e-6, None)
    clean /= clean.sum(1, keepdims=True)
    out = {}
    w = clean * given_true[y]
    out["deconv.posterior"] = 1 - w[rows, y] / w.sum(1)
    post = p * given_true[y]
    post /= post.sum(1, keepdims=True)
    for it in range(5):
        q = np.zeros((c, c))
        np.add.at(q, y, post)  # [given, true] soft counts
        gt = q / q.sum(0, keepdims=True)
        post = p * gt[y]
        post /= post.sum(1, keepdims=True)
    out["em.posterior"] = 1 - post[rows, y]
    return out


def class_z(score: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.empty_like(score)
    for k in np.unique(y):
        s = score[y == k]
        out[y == k] = (s - np.median(s)) / (s.std() + 1e-12)
    return out


def rank(s: np.ndarray) -> np.ndarray:
    return pd.Series(s).rank(pct=True).to_numpy()


def combos(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mix: dict[str, Callable[[], np.ndarray]] = {
        "rank(final_loss+aum)": lambda: rank(scores["final.loss"]) + rank(scores["aum"]),
        "rank(posterior+aum)": lambda: rank(scores["mean_last3.posterior"]) + rank(scores["aum"]),
        "rank(posterior+final_loss)": lambda: rank(scores["mean_last3.posterior"]) + rank(scores["final.loss"]),
        "rank(fposterior+cl_margin)": lambda: rank(scores["final.posterior"]) + rank(scores["final.cl_margin"]),
        "rank(fposterior+final_loss)": lambda: rank(scores["final.posterior"]) + rank(scores["final.loss"]),
        "fposterior+0.01final_loss": lambda: scores["final.posterior"] + 0.01 * scores["final.loss"],
    }
    return {name: f() for name, f in mix.items()}


SUMMARY = {"final loss": "final.loss", "AUM": "aum", "best epoch's loss": None, "mean of last 3 (loss)": "mean_last3.loss",
           "class-z loss": "loss_classz", "cleanlab margin": "final.cl_margin", "cleanlab adjusted": "final.cl_self_adj",
           "posterior (inverse T)": "final.posterior"}


def summary(work: Path, manifest_dirs: list[Path]) -> None:
    """One row per cached run: the main candidates and the product's noise score (AUROC against the truth), its
    flagged count against its estimate, and how many of its suggestions' relabels at >= 0.9 are right."""
    from pruning_core.audit.suggest import SUGGESTED_LABEL, confident_relabels, suggest_labels
    from pruning_core.dynamics.noise import NOISE_SCORE, noise_scores

    rows = []
    for run in sorted(work.glob("*.npz")):
        manifest = run.name.split("-")[0]
        frame = pd.read_csv(next(d / f"{manifest}.csv" for d in manifest_dirs if (d / f"{manifest}.csv").is_file()))
        classes = sorted(frame["true_label"].unique())
        y = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        noisy = (frame["label"] != frame["true_label"]).to_numpy()
        saved = np.load(run)
        probs = saved["probs"]
        scores = detectors(probs, y)
        row = {"run": run.stem, "train s": float(saved["seconds"])}
        for name, key in SUMMARY.items():
            if key is None:
                aurocs = [roc_auc_score(noisy, scores[f"loss@{k + 1}"]) for k in range(probs.shape[0])]
                row[name] = f"{max(aurocs):.4f} (ep {int(np.argmax(aurocs)) + 1})"
            else:
                row[name] = round(roc_auc_score(noisy, scores[key]), 4)
        noise, _, settings = noise_scores(y, probs[-1].astype(np.float64), classes, source="")
        wrong = noise[NOISE_SCORE].to_numpy()
        row["noise score"] = round(roc_auc_score(noisy, wrong), 4)
        # the product's suggestions from this posterior: how many relabels at >= 0.9, and how many are right
        suggested, _ = suggest_labels(pd.concat([frame[["label"]], noise], axis=1))
        relabel = confident_relabels(pd.concat([frame[["label"]], suggested], axis=1), 0.9)
        right = (suggested[SUGGESTED_LABEL].astype(str) == frame["true_label"].astype(str)).to_numpy()
        row["relabels at >= 0.9: right"] = f"{int(right[relabel].sum()):,} / {int(relabel.sum()):,}"
        flagged = wrong >= 0.5  # the Overview's rule: its estimate is the sum of the flagged scores
        row["flagged: mislabelled / estimated"] = f"{int(noisy[flagged].sum()):,} / {wrong[flagged].sum():,.0f}"
        row["structure (weight)"] = f"{settings['structure']:.2f} ({settings['structure_weight']:.2f})"
        rows.append(row)
    print(pd.DataFrame(rows).to_markdown(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", help="a CIFAR-10 noise manifest, or 'summary' for a table of every cached run")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default="plain")
    ap.add_argument("--manifest-dir", type=Path, action="append", default=[],
                    help="where else 'summary' looks for the manifests of cached runs (e.g. make_noise_manifest's output)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("NOISE_WORK", "/work/data/noise-research")))
    ap.add_argument("--cifar-root", type=Path, default=Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar")))
    args = ap.parse_args()
    if args.manifest == "summary":
        summary(args.work, [DATA, *args.manifest_dir])
        return
    manifest_path = Path(args.manifest) if Path(args.manifest).is_file() else DATA / args.manifest
    frame = pd.read_csv(manifest_path)
    classes = sorted(frame["true_label"].unique())
    y = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    noisy = (frame["label"] != frame["true_label"]).to_numpy()
    run = args.work / f"{manifest_path.stem}-{args.variant}-s{args.size}-e{args.epochs}-w{args.width}-seed{args.seed}.npz"
    if run.is_file():
        saved = np.load(run)
        probs, seconds = saved["probs"], float(saved["seconds"])
    else:
        x = images(frame, unpack(args.cifar_root), args.size, args.work)
        print(f"{run.name}: training, load {os.getloadavg()[0]:.1f}", flush=True)
        probs, seconds = train_recording_softmax(x, y, epochs=args.epochs, width=args.width, seed=args.seed,
                                                 variant=args.variant)
        np.savez(run, probs=probs, seconds=seconds)
    scores = detectors(probs, y)
    scores.update(combos(scores))
    table = pd.DataFrame({"detector": list(scores), "auroc": [roc_auc_score(noisy, s) for s in scores.values()]})
    print(f"{run.stem}: {noisy.mean():.1%} noisy, {seconds:.0f} s training")
    print(table.sort_values("auroc", ascending=False).to_string(index=False, float_format="%.4f"))


if __name__ == "__main__":
    main()
