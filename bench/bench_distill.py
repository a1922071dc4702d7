"""Prune or distil: MDW's distilled K pairs against K random, K cleanest and all pairs (issue 26).

    python bench/bench_distill.py distill --variant demo --budget 600                  # MDW, K = 100
    python bench/bench_distill.py distill --variant demo --budget 600 --no-correspondence  # the ablation
    python bench/bench_distill.py distill --variant shuffle30 --budget 600
    python bench/bench_distill.py compare --variant demo                               # needs the distillations
    python bench/bench_distill.py compare --variant demo --real-lr 0.02    # the real pairs at the set's step

``distill`` runs the same job as ``prunescope distill`` (cached in the result store, so ``compare`` reads
it); several can run side by side.  ``compare`` trains a fresh student on each option (3 seeds by default)
and prints image→text / text→image recall@1/5 on the demo's clean held-out set, each option's mean ± SE,
and whether distilled beats random and cleanest (paired t-test at 5 % over the seeds), and how
much of that margin the ablation keeps.

Variants: ``demo`` (2,395 pairs, 5 % captions of another image), ``shuffle30`` (the demo with 30 % of its
captions permuted among a random 30 % of pairs, written beside the bench's temp folder; same images).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.store import ResultStore, default_cache_dir  # noqa: E402
from pruning_core.data.datasets import load_dataset  # noqa: E402
from pruning_core.demo.dataset import ensure_demo  # noqa: E402
from pruning_core.distill.compare import (ABLATION, CompareConfig, cleanest_rows, compare_options,  # noqa: E402
                                          distilled_settings, paired_margins, prune_or_distil, summarise)
from pruning_core.distill.job import distill_dataset, distill_inputs  # noqa: E402
from pruning_core.distill.mdw import MDWConfig  # noqa: E402
from pruning_core.runtime.planner import process_started  # noqa: E402
from pruning_core.runtime.progress import TqdmProgress  # noqa: E402
from pruning_core.scoring.pipeline import ClipConfig, clip_score_table  # noqa: E402

VARIANT_DIR = Path("/tmp/prunescope-bench-distill")
CLEANEST_START = "distilled from cleanest"


def variant_dataset(name: str, assets):
    """The demo, or the demo with 30 % of captions shuffled (a manifest over the demo's own images)."""
    if name == "demo":
        return load_dataset(assets.manifest)
    frame = pd.read_csv(assets.manifest)
    rng = np.random.default_rng(30)
    picked = rng.choice(len(frame), size=int(0.3 * len(frame)), replace=False)
    frame.loc[picked, "caption"] = frame["caption"].to_numpy()[rng.permutation(picked)]
    VARIANT_DIR.mkdir(parents=True, exist_ok=True)
    path = VARIANT_DIR / "shuffle30.csv"
    frame.to_csv(path, index=False)
    return load_dataset(path, root=assets.manifest.parent)


def setup(variant: str):
    assets = ensure_demo()
    store = ResultStore(default_cache_dir())
    clip = ClipConfig(model=assets.clip_model, pretrained=str(assets.clip_checkpoint), device="cpu")
    dataset = variant_dataset(variant, assets)
    return assets, store, clip, dataset, distill_inputs(dataset, clip, store, progress=TqdmProgress())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["distill", "compare"])
    parser.add_argument("--variant", choices=["demo", "shuffle30"], default="demo")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--no-correspondence", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-ablation", action="store_true", help="compare: skip the correspondence-off set")
    parser.add_argument("--real-lr", type=float, default=CompareConfig.real_lr,
                        help="compare: the step real pairs (random, cleanest, all) train at; a distilled set brings its own")
    parser.add_argument("--cleanest-start", action="store_true",
                        help="distill: start from the cleanest K pairs (prune, then distil); compare: add that set")
    args = parser.parse_args()
    started = process_started()  # the budget counts from the interpreter's start, as the CLI's
    assets, store, clip, dataset, inputs = setup(args.variant)
    if args.phase == "distill":
        config = MDWConfig(pairs=args.pairs, learn_correspondence=not args.no_correspondence)
        start = cleanest_rows(clip_score_table(dataset, clip, store), inputs, args.pairs) if args.cleanest_start else None
        done = distill_dataset(inputs, config, store, budget_s=args.budget, start=start, started=started,
                               progress=TqdmProgress())
        print(f"{args.variant} K={args.pairs} correspondence={'off' if args.no_correspondence else 'on'}: "
              f"{done.meta['iterations']} iterations, {done.meta['seconds']} s of work, "
              f"{time.monotonic() - started:.0f} s wall incl. start-up, plan {done.meta['plan']}, "
              f"step size {np.exp(done.state.log_lr):.4f}, validation {done.meta['validation']}, kept "
              f"{done.meta['kept']}")
        return
    test = load_dataset(assets.test_manifest)
    table = clip_score_table(dataset, clip, store)
    result = prune_or_distil(dataset, test, clip, table, store, sizes=[args.pairs], budget_s=args.budget,
                             ablation=not args.no_ablation,
                             config=CompareConfig(seeds=tuple(range(args.seeds)), real_lr=args.real_lr),
                             progress=TqdmProgress())
    results = result.results
    if args.cleanest_start:
        pruned = distill_dataset(inputs, MDWConfig(pairs=args.pairs), store, budget_s=args.budget,
                                 start=cleanest_rows(table, inputs, args.pairs))
        extra = compare_options(inputs, distill_inputs(test, clip, store), table, [(CLEANEST_START, pruned)], store,
                                config=CompareConfig(seeds=tuple(range(args.seeds))))
        results = pd.concat([results, extra[extra["option"] == CLEANEST_START]], ignore_index=True)
    d = result.distilled[args.pairs]
    sets = [("distilled", d), *((ABLATION, a) for a in result.ablations.values())]
    if args.cleanest_start:
        sets.append((CLEANEST_START, pruned))
    for name, shown in sets:
        print(f"{name}: {distilled_settings(shown)}; plan {shown.meta['plan']}, "
              f"step size {np.exp(shown.state.log_lr):.4f}")
    original = pd.read_csv(assets.manifest).set_index("path")["caption"]  # the demo's captions, by path
    ok = dataset.samples["caption"].to_numpy() == original.reindex(dataset.samples["path"]).to_numpy()
    if "caption_ok" in dataset.samples:
        ok &= dataset.samples["caption_ok"].astype(str).str.lower().eq("true").to_numpy()
    joint = np.exp(d.state.correspondence - d.state.correspondence.max())
    own = np.diag(joint / joint.sum(axis=1, keepdims=True))
    started_ok = ok[d.state.source_index]
    source = "learned by matching" if d.meta["kept"] == "matched" else "the kept start's (the experts' and the mix's)"
    print(f"P(own text | image), {source}: {own[started_ok].mean():.3f} over {started_ok.sum()} pairs that started "
          f"matched, {np.round(own[~started_ok], 3).tolist()} for the {(~started_ok).sum()} that started mismatched")
    summary = summarise(results)
    pd.set_option("display.width", 200)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    margins = {name: paired_margins(results, "i2t@1", name).set_index("baseline") for name, _ in sets}
    for name, frame in margins.items():
        for base, m in frame.iterrows():
            line = (f"i2t@1 {name} - {base}: {m['difference']:+.4f} (paired SE {m['se']:.4f}, {m['seeds']} seeds): "
                    f"{m['verdict']} (paired t-test at 5 %)")
            full = margins["distilled"].loc[base, "difference"]
            if name == ABLATION and full > 0:
                line += f"; share of the distilled set's margin lost: {(full - m['difference']) / full:.2f}"
            print(line)
    print(f"wall {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
