"""The ``prunescope`` command line: the same library calls as the app, with tqdm progress."""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from cache.store import ResultStore
from pruning_core.runtime.progress import TqdmProgress
from pruning_core.runtime.safety import DEFAULT_ADDRESS, ROOTS_ENV, check_outputs, check_replaceable, is_loopback

DEMO = "demo"

EXIT_BAD_INPUT = 2
EXIT_DAMAGED_CACHE = 3
"""``cache verify`` found damaged entries or chunks (they were quarantined and are recomputed on next use)."""


def _store(args: argparse.Namespace) -> ResultStore:
    return ResultStore(args.cache_dir)


def parse_weights(text: Optional[str]) -> Optional[dict[str, float]]:
    """``col=w,col=w`` as given to --weights (each weight a finite number: selection checks that too)."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--weights: expected column=weight, got {part!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights: weight of {name!r} is not a number: {value!r}") from None
    return weights


def cmd_demo(args: argparse.Namespace) -> int:
    from pruning_core.demo.dataset import ensure_demo

    assets = ensure_demo(args.dir, progress=TqdmProgress())
    print(f"demo dataset root: {assets.root}")
    print(f"manifest:          {assets.manifest}")
    print(f"ground truth:      {assets.ground_truth}")
    print(f"tiny CLIP:         --clip-model {assets.clip_model} --clip-pretrained {assets.clip_checkpoint}")
    return 0


def _load(args: argparse.Namespace):
    """The dataset named on the command line ('demo' builds or reuses the built-in one), and the demo's assets.

    Files that decoded at an earlier load (same size and mtime) are not decoded again (the store's ledger)."""
    from pruning_core.data.datasets import load_dataset
    from pruning_core.data.ledger import LEDGER_FOLDER

    ledger_dir = _store(args).root / LEDGER_FOLDER
    if args.data == DEMO:
        from pruning_core.demo.dataset import ensure_demo

        assets = ensure_demo(progress=TqdmProgress())
        return load_dataset(assets.manifest, progress=TqdmProgress(), ledger_dir=ledger_dir), assets
    return load_dataset(args.data, root=args.root, format=args.format, split=args.split, progress=TqdmProgress(),
                        ledger_dir=ledger_dir), None


def _add_format_args(command: argparse.ArgumentParser) -> None:
    """--format and --split, for every command that reads a dataset (detected from the path unless given)."""
    from pruning_core.data.readers import FORMATS

    command.add_argument("--format", default=None, choices=list(FORMATS),
                         help="dataset format (default: detected from the path): "
                              + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    command.add_argument("--split", default=None,
                         help="which split to audit when the data has several (train/ val/ test/ folders, a 'split' "
                              "column, an HF DatasetDict or parquet export; default: train)")


def cmd_score(args: argparse.Namespace) -> int:
    from pruning_core.data.datasets import check_trainable
    from pruning_core.export.subset import write_table
    from pruning_core.image_quality import QualityConfig
    from pruning_core.scoring.pipeline import ClipConfig, score_dataset
    from pruning_core.scoring.score_table import ScoreTable

    started = args.clock_started  # --budget covers the whole dynamics step: starting, loading and probing count
    outputs = ScoreTable.output_paths(args.out)  # refused before any work: a bad name must not cost a scoring run
    if args.data != DEMO:
        check_outputs(outputs, [args.data])
    check_replaceable(outputs, ScoreTable.recognisers(), overwrite=args.overwrite)
    dataset, demo = _load(args)
    if demo is not None:  # the demo scores with its own tiny CLIP unless told otherwise
        args.clip_model = args.clip_model or demo.clip_model
        args.clip_pretrained = args.clip_pretrained or str(demo.clip_checkpoint)
    print(dataset.report.summary(), file=sys.stderr)
    clip = None
    if args.clip:
        clip = ClipConfig(
            model=args.clip_model or ClipConfig.model,
            pretrained=args.clip_pretrained or ClipConfig.pretrained,
            device=args.device,
            batch_size=args.batch_size,
            adapter_epochs=args.adapter_epochs,
            precision=args.precision,
            k=args.knn_k,
            dup_threshold=args.duplicate_threshold,
        )
    if args.dynamics and args.pred_probs:  # before any work: both would write the cleanlab.* columns
        raise ValueError("--pred-probs and --dynamics both give the cleanlab.* scores: choose one")
    if args.dynamics or args.adapruner is not None:  # before the throughput probe: one class cannot train
        check_trainable(dataset, args.data, "--dynamics and --adapruner")
    dynamics = None
    if args.dynamics:
        plan = _planned_dynamics(args, dataset, started, grows=True)
        dynamics = plan.config
    adapruner = None
    if args.adapruner is not None:  # one training run, no cross-fitting
        adapruner = (args.adapruner, _planned_dynamics(args, dataset, None, folds=0).config)
    image_quality = QualityConfig() if args.image_quality else None
    pred_probs, features = _own_model_arrays(args, dataset)
    if all(part is None for part in (clip, dynamics, adapruner, image_quality, pred_probs, features)):
        raise ValueError("nothing to score: enable --clip, --dynamics, --image-quality, --adapruner RATIO, "
                         "--pred-probs and/or --features")
    table = score_dataset(dataset, _store(args), clip=clip, dynamics=dynamics, adapruner=adapruner,
                          image_quality=image_quality, pred_probs=pred_probs, features=features,
                          dynamics_spent_s=plan.spent_s if dynamics is not None else 0.0,
                          progress=TqdmProgress())
    if dynamics is not None:
        from pruning_core.runtime.planner import check_run_rate

        run = check_run_rate(plan, table.settings["dynamics"], _store(args))
        table.settings["dynamics"]["plan"] = {**plan.as_dict(), "run": run}
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    sidecar = table.save(args.out)
    if dataset.report.issues:
        write_table(dataset.report.as_frame(), outputs["issues"])
        print(f"skipped/flagged inputs listed in {outputs['issues']}", file=sys.stderr)
    print(f"wrote {len(table.frame):,} rows x {len(table.infos)} scores to {args.out} (meanings in {sidecar})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The Overview's findings as a file to share: HTML (self-contained, thumbnails embedded), Markdown or JSON."""
    from pruning_core.audit.overview import AUDIT_TAG_PREFIX, overview
    from pruning_core.audit.report import is_report, render, thumbnail_data_url
    from pruning_core.audit.review import DecisionStore, decision_column, decisions_for_table
    from pruning_core.scoring.score_table import DATASET_SETTING, ScoreTable

    outputs = {"report": args.out}
    check_outputs(outputs, [p for p in (args.scores, args.scores.with_suffix(".json"), args.decisions) if p])
    check_replaceable(outputs, {"report": is_report}, overwrite=args.overwrite)
    table = ScoreTable.load(args.scores)
    name = str((table.settings.get(DATASET_SETTING) or {}).get("name") or args.scores.stem)
    decisions, audited = None, {}
    if args.decisions is not None:
        if not args.decisions.is_file():
            raise FileNotFoundError(f"review decisions not found: {args.decisions}")
        store = DecisionStore(args.decisions)
        found = decisions_for_table(store, table.frame["path"].astype(str).tolist(), table.frame["label"].astype(str),
                                    table_fingerprint=(table.settings.get(DATASET_SETTING) or {}).get("fingerprint"))
        if found.fingerprint is not None:
            decisions = decision_column(table.frame, store.latest(found.fingerprint))
            audited = {tag[len(AUDIT_TAG_PREFIX):]: set(store.tagged(found.fingerprint, tag))
                       for tag in store.tags(found.fingerprint) if tag.startswith(AUDIT_TAG_PREFIX)}
    skipped, thumbnail = None, None
    if args.data is not None:
        from collections import Counter

        dataset, _ = _load(args)
        if list(dataset.samples["path"]) != table.frame["path"].astype(str).tolist():
            raise ValueError(f"{args.scores} does not score the samples of {args.data}: give the data it was scored on")
        skipped = dict(Counter(i.kind or i.reason for i in dataset.report.errors))
        thumbnail = lambda path: thumbnail_data_url(dataset.image_ref(path))  # noqa: E731
        pairs = _leakage_pairs(args, dataset)
    elif args.test is not None:
        raise ValueError("--test needs --data: leakage compares the audited images with the test set's")
    else:
        pairs = {}
    ov = overview(table.frame, table.infos, decisions=decisions, skipped=skipped, scoring=table.settings,
                  audited=audited)
    text = render(ov, table.frame, args.out.suffix.lower(), name=name, thumbnail=thumbnail, pairs=pairs)
    from cache.store import atomic_write_bytes

    atomic_write_bytes(args.out, text.encode())
    print(f"wrote the report on {len(table.frame):,} samples ({len(ov.findings)} findings) to {args.out}")
    return 0


def _leakage_pairs(args: argparse.Namespace, dataset) -> dict:
    """The report's leakage findings: every other split of the audited dataset, and ``--test``, against it."""
    from pruning_core.audit.leakage import leakage_findings
    from pruning_core.audit.report import thumbnail_data_url
    from pruning_core.data.datasets import load_dataset

    others = [load_dataset(args.data, root=args.root, format=args.format, split=split, progress=TqdmProgress())
              for split in dataset.splits if split != dataset.split]
    if args.test is not None:
        others.append(load_dataset(args.test, root=args.test_root, progress=TqdmProgress()))
    return leakage_findings(dataset, others, store=_store(args), progress=TqdmProgress(),
                            thumbnail=None if args.out.suffix.lower() == ".md" else thumbnail_data_url)


def _own_model_arrays(args: argparse.Namespace, dataset):
    """The user's ``--pred-probs`` and ``--features`` for ``dataset``, checked (None where not given)."""
    from pruning_core.audit.own_model import read_features, read_pred_probs

    pred_probs = features = None
    if args.pred_probs:
        pred_probs = read_pred_probs(args.pred_probs, dataset)
        print(f"--pred-probs: {pred_probs.source['row_order']}, sha256 {pred_probs.source['sha256'][:12]}...",
              file=sys.stderr)
    if args.features:
        features = read_features(args.features, dataset)
        print(f"--features: {features.source['row_order']}, sha256 {features.source['sha256'][:12]}...",
              file=sys.stderr)
    return pred_probs, features


def cmd_leakage(args: argparse.Namespace) -> int:
    """Test samples that are copies of training samples (exact bytes, or near by pixel cosine), as pairs."""
    from pruning_core.audit.leakage import EXACT, PAIR_COLUMNS, LeakageConfig, find_leakage
    from pruning_core.data.datasets import load_dataset
    from pruning_core.export.subset import write_table
    from pruning_core.runtime.safety import has_columns

    check_outputs({"pairs": args.out}, [args.train, args.test])
    check_replaceable({"pairs table": args.out}, {"pairs table": has_columns(PAIR_COLUMNS)}, overwrite=args.overwrite)
    train = load_dataset(Path(args.train), root=args.root, progress=TqdmProgress())
    test = load_dataset(Path(args.test), root=args.test_root, progress=TqdmProgress())
    config = LeakageConfig(threshold=args.threshold, pixel_size=args.pixel_size)
    pairs = find_leakage(train, test, config, store=_store(args), progress=TqdmProgress())
    write_table(pairs, args.out)
    exact = int((pairs["kind"] == EXACT).sum())
    print(f"{pairs['test_id'].nunique():,} of {len(test):,} test samples leak (raw counts): {exact:,} exact-copy "
          f"pairs, {len(pairs) - exact:,} near copies at cosine >= {config.threshold:g} -> {args.out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and check a dataset (missing, corrupt, duplicate, outside-root files...) without scoring it."""
    from pruning_core.data.datasets import ISSUE_COLUMNS
    from pruning_core.export.subset import write_table
    from pruning_core.runtime.safety import has_columns

    if args.data != DEMO:
        check_outputs({"issues": args.out}, [args.data])
    check_replaceable({"issues table": args.out}, {"issues table": has_columns(ISSUE_COLUMNS)},
                      overwrite=args.overwrite)

    dataset, _ = _load(args)
    print(dataset.report.summary())
    write_table(dataset.report.as_frame(), args.out)
    print(f"{len(dataset.report.issues):,} issues listed in {args.out}")
    return 0


_PROXY_FLAG = {"batch_size": "proxy_batch_size"}
"""DynamicsConfig fields whose flag has another name (--batch-size is CLIP's)."""


def _planned_dynamics(args: argparse.Namespace, dataset, started: Optional[float], grows: bool = False, **fixed: int):
    """Proxy settings from the flags given (and ``fixed``), the rest planned to fit ``--budget``; prints the plan.

    ``started``: when the step's budget clock started (None: now).  ``grows``: the recording run's plan (it may
    grow into more epochs, see ``plan_dynamics``).
    """
    from pruning_core.dynamics.config import DynamicsConfig
    from pruning_core.dynamics.probe import PROXY_PROBE
    from pruning_core.runtime.planner import PLANNED_FIELDS, plan_dynamics
    from pruning_core.scoring.pipeline import decoding_seconds

    given = {f: getattr(args, _PROXY_FLAG.get(f, f)) for f in PLANNED_FIELDS}
    given = {**{f: v for f, v in given.items() if v is not None}, **fixed}
    budget = args.budget if args.budget and args.budget > 0 else None
    config = DynamicsConfig(arch=args.arch, dynunc_window=args.dynunc_window, seed=args.seed, device=args.device,
                            precision=args.precision, crossfit_share=args.crossfit_share, budget_s=budget, **given)
    plan = plan_dynamics(config, len(dataset), num_classes=len(dataset.classes), budget_s=budget, fixed=given,
                         store=_store(args), progress=TqdmProgress(), probe=PROXY_PROBE, started=started,
                         overhead_s=decoding_seconds(dataset, _store(args)), grows=grows)
    print(f"plan: {plan.describe()}", file=sys.stderr)
    return plan


def _cps_flags() -> dict[str, str]:
    """The strategy settings the select command takes as flags: each ``CPSConfig`` field as ``--cps-<field>``,
    and the fix strategies' relabel threshold as ``--fix-threshold``."""
    from dataclasses import fields

    from pruning_core.clip_scores.cps import CPSConfig

    return {**{f.name: f"cps_{f.name}" for f in fields(CPSConfig)}, "threshold": "fix_threshold"}


def strategy_settings(args: argparse.Namespace) -> Optional[dict]:
    """The chosen strategy's settings (its defaults, overridden by the flags given) for the recipe, or None.

    Recorded whole in the manifest so a replay does not depend on the defaults of a later version.
    """
    from dataclasses import asdict, fields, replace

    from pruning_core.selection import get_strategy

    flags = _cps_flags()
    given = {name: getattr(args, flag) for name, flag in flags.items() if getattr(args, flag) is not None}
    settings = get_strategy(args.strategy).settings
    own = {f.name for f in fields(settings())} if settings is not None else set()
    stray = [flags[name] for name in given if name not in own]
    if stray:
        raise ValueError(f"--{'/--'.join(f.replace('_', '-') for f in stray)}: strategy {args.strategy!r} has no "
                         "such settings")
    return asdict(replace(settings(), **given)) if settings is not None else None


def cmd_select(args: argparse.Namespace) -> int:
    """Select a subset and write its manifest, or replay a manifest (``--replay``): both through ``Manifest``."""
    from pruning_core.export.subset import STATUS_COLUMNS, write_table
    from pruning_core.export.manifest import Manifest, kept_rows
    from pruning_core.runtime.safety import has_columns, json_with_key
    from pruning_core.scoring.score_table import ScoreTable
    from pruning_core.selection import SelectionRecipe, parse_keep, run_recipe

    if args.replay:
        manifest = Manifest.read(args.replay)
        scores_path = Path(args.scores) if args.scores else manifest.scores_path(args.replay)
    else:
        if args.keep is None or args.scores is None:
            raise ValueError("select needs SCORES and --keep (or --replay MANIFEST)")
        recipe = SelectionRecipe(
            keep=parse_keep(args.keep),
            strategy=args.strategy,
            weights=parse_weights(args.weights),
            balance=args.balance,
            seed=args.seed,
            cps_params=strategy_settings(args),
        )
        scores_path = Path(args.scores)
    manifest_path = Path(args.manifest) if args.manifest else Path(args.out).with_suffix(".manifest.json")
    outputs = {"kept list": Path(args.out)} if args.replay else {"kept list": Path(args.out), "manifest": manifest_path}
    inputs = [scores_path, scores_path.with_suffix(".json"), *(Path(p) for p in (args.replay, args.decisions) if p)]
    check_outputs(outputs, inputs)
    check_replaceable(outputs, {"kept list": has_columns(STATUS_COLUMNS), "manifest": json_with_key("manifest_version")},
                      overwrite=args.overwrite)
    table = ScoreTable.load(scores_path)
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.replay:
        # The manifest's snapshot of review decisions, never the live store: later decisions must
        # not change a replayed subset.
        mask = manifest.replay(table, str(scores_path))
    else:
        review = _review_snapshot(args, table) if args.decisions else None
        mask = run_recipe(table.frame, table.infos, recipe, (review or {}).get("removed") or None)
        scores_file = os.path.relpath(scores_path.resolve(), manifest_path.resolve().parent)
        manifest = Manifest.build(table, recipe, mask, scores_file=scores_file, review=review)
    write_table(kept_rows(manifest.selection_table(table.frame, mask)), Path(args.out))
    if not args.replay:
        manifest.write(manifest_path)
    print(f"kept {manifest.kept_count:,} of {len(table.frame):,} samples -> {args.out}"
          + ("" if args.replay else f" (replay with: prunescope select --replay {manifest_path} --out FILE)"))
    return 0


def _review_snapshot(args: argparse.Namespace, table) -> Optional[dict]:
    """The decisions in ``--decisions`` bound to ``table``'s dataset, as the manifest records them (None: none match)."""
    from pruning_core.scoring.score_table import DATASET_SETTING
    from pruning_core.audit.review import DecisionStore, decisions_for_table

    if not Path(args.decisions).is_file():
        raise FileNotFoundError(f"review decisions not found: {args.decisions}")
    store = DecisionStore(args.decisions)
    found = decisions_for_table(store, table.frame["path"].astype(str).tolist(), table.frame["label"].astype(str),
                                table_fingerprint=(table.settings.get(DATASET_SETTING) or {}).get("fingerprint"),
                                fingerprint=args.fingerprint,
                                allow_other_dataset=args.decisions_from_other_dataset)
    if found.fingerprint is None:
        print(f"no review decisions in {args.decisions} match these scores", file=sys.stderr)
        return None
    if found.other_dataset:
        print(f"warning: applying decisions made on another dataset ({found.fingerprint}): "
              f"{found.matched} of {found.decided} decided paths match these scores", file=sys.stderr)
    review = store.snapshot(found.fingerprint)
    print(f"review decisions: {len(review['removed'])} removed, {len(review['relabels'])} relabelled "
          f"(dataset {found.fingerprint})", file=sys.stderr)
    return review


def _aligned_scores(dataset, scores_path: Optional[Path]):
    """The score table for ``dataset`` (or just its sample columns); refuses a table of other samples."""
    from pruning_core.scoring.score_table import ScoreTable, base_table

    if scores_path is None:
        return base_table(dataset)
    table = ScoreTable.load(scores_path)
    if len(table.frame) != len(dataset.samples) or not (table.frame["path"].to_numpy() == dataset.samples["path"].to_numpy()).all():
        raise ValueError(f"{scores_path} does not score this dataset's samples (row {len(table.frame):,} vs "
                         f"{len(dataset.samples):,}, or other paths): score it with 'prunescope score' first")
    return table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pruning_core.data.datasets import check_trainable, load_dataset
    from pruning_core.dynamics.config import DynamicsConfig
    from pruning_core.export.subset import write_table
    from pruning_core.runtime.safety import has_columns
    from pruning_core.scoring.pipeline import ClipConfig
    from pruning_core.runtime.planner import PLANNED_FIELDS
    from pruning_core.selection import parse_keep
    from pruning_core.subset_training.evaluate import RESULT_COLUMNS, EvalConfig, evaluate_pruning, plan_grid, summarise

    check_outputs({"runs": args.out}, [p for p in (args.data, args.scores, args.test) if p and p != DEMO])
    check_replaceable({"runs table": args.out}, {"runs table": has_columns(RESULT_COLUMNS)}, overwrite=args.overwrite)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    keeps = [float(parse_keep(k)) for k in args.keep.split(",")]
    dataset, assets = _load(args)
    check_trainable(dataset, args.data, "evaluate's runs")
    table = _aligned_scores(dataset, args.scores)
    test = load_dataset(Path(args.test), root=args.test_root, progress=TqdmProgress()) if args.test else None
    if test is None and args.holdout is None and "test" in dataset.splits and dataset.split != "test":
        test = load_dataset(args.data, root=args.root, format=args.format, split="test", progress=TqdmProgress())
        print(f"held-out set: the data's own 'test' split ({len(test):,} samples)", file=sys.stderr)
    if test is None and assets is not None and args.holdout is None:
        test = load_dataset(assets.test_manifest)  # the demo's clean held-out set
    given = {f: getattr(args, f) for f in PLANNED_FIELDS if f != "folds" and getattr(args, f) is not None}
    budget = args.budget if args.budget and args.budget > 0 else None
    defaults = EvalConfig()
    config = EvalConfig(
        proxy=DynamicsConfig(arch=args.arch, seed=args.seed, device=args.device, precision=args.precision, folds=0,
                             **given),
        budget=args.train_budget, seeds=args.seeds, time_budget_s=budget,
        holdout=args.holdout if args.holdout is not None else defaults.holdout,
    )
    clip = None
    if config.is_probe:
        clip = (ClipConfig(model=assets.clip_model, pretrained=str(assets.clip_checkpoint)) if assets is not None
                else ClipConfig(model=args.clip_model or ClipConfig.model,
                                pretrained=args.clip_pretrained or ClipConfig.pretrained, device=args.device))
    plan = plan_grid(config, strategies=strategies, keeps=keeps, n_samples=len(dataset),
                     n_test=len(test) if test is not None else None, num_classes=len(dataset.classes), fixed=given,
                     clip=clip, store=_store(args), progress=TqdmProgress())
    print(f"plan: {plan.describe()}", file=sys.stderr)
    results = evaluate_pruning(dataset, table, _store(args), strategies=strategies, keeps=keeps, config=plan.config,
                               test=test, clip=clip, weights=parse_weights(args.weights), balance=args.balance,
                               progress=TqdmProgress())
    write_table(results, Path(args.out))
    summary = summarise(results)
    print(f"proxy: {results.attrs['proxy']}; training budget: {config.budget}; {config.seeds} seeds per point")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {len(results)} runs to {args.out} ({int(results['cached'].sum())} from the cache)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a captioned dataset into K synthetic pairs (MDW) within --budget seconds; export them to --out."""
    from pruning_core.distill.export import MANIFEST_NAME, export_distilled
    from pruning_core.distill.compare import distilled_settings
    from pruning_core.distill.job import distill_dataset, distill_inputs, distill_step
    from pruning_core.distill.mdw import MDWConfig
    from pruning_core.scoring.pipeline import ClipConfig

    started = args.clock_started  # --budget covers the whole command, start-up included
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a file; give a folder for the distilled set")
    if args.out.is_dir() and any(args.out.iterdir()) and not (args.out / MANIFEST_NAME).is_file() \
            and not args.overwrite:
        raise ValueError(f"--out {args.out}: folder holds files PruneScope did not write (no {MANIFEST_NAME}); "
                         "choose an empty folder or pass --overwrite")
    dataset, demo = _load(args)
    clip = ClipConfig(model=args.clip_model or (demo.clip_model if demo else ClipConfig.model),
                      pretrained=args.clip_pretrained or (str(demo.clip_checkpoint) if demo else ClipConfig.pretrained),
                      device="cpu")
    config = MDWConfig(pairs=args.pairs, experts=args.experts, expert_epochs=args.expert_epochs,
                       iterations=args.iterations, learn_correspondence=not args.no_correspondence, seed=args.seed)
    store = _store(args)
    inputs = distill_inputs(dataset, clip, store, progress=TqdmProgress())
    cached = distill_step(inputs, config, args.budget).is_cached(store)
    distilled = distill_dataset(inputs, config, store, budget_s=args.budget, started=started, progress=TqdmProgress())
    export_distilled(distilled, inputs, args.out, dataset.name)
    print(f"distilled {len(inputs.images):,} pairs (a raw count: the captioned, decodable ones) into "
          f"{distilled_settings(distilled)}; {distilled.meta['seconds']:.0f} s of work"
          + (", read from the cache (an earlier run with these settings)" if cached else "")
          + f"; wrote {args.out} ({MANIFEST_NAME}). Not compared with pruning here: the Evaluate page's "
            "'Prune or distil?' section trains on it, on random and on the cleanest pairs")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "clear":
        print(f"removed {store.clear(args.step, keys=args.key)} cache entries from {store.root}")
        return 0
    if args.action == "verify":
        report = store.verify()
        for problem in report.problems:
            print(f"quarantined {problem}")
        print(f"{report.checked} entries and {report.chunks} partial chunks checked in {store.root}: "
              + (f"{len(report.problems)} damaged, moved to {store.quarantine_dir} (they are recomputed on next use)"
                 if report.problems else "all intact"))
        return EXIT_DAMAGED_CACHE if report.problems else 0
    entries = store.ls()
    print(f"{len(entries)} entries in {store.root}")
    for entry in entries:
        meta = entry.meta
        print(f"{entry.key:40s} {meta.get('step', '?'):12s} {entry.size_bytes / 1e6:9.1f} MB  {meta.get('dataset', '')}")
    return 0


def app_command(args: argparse.Namespace) -> list[str]:
    """The server command line for ``prunescope app``; refuses a non-loopback address without ``--allow-remote``."""
    if not is_loopback(args.address):
        if not args.allow_remote:
            raise ValueError(f"--address {args.address} would let other machines reach the app, which has no "
                             "login of its own; add --allow-remote if a reverse proxy with authentication or a "
                             "firewall guards that address (README: Security)")
        print(f"warning: the app listens on {args.address}:{args.port} without access control: anyone who can "
              "reach it can browse its workspace and the review decisions; put it behind an authenticating "
              "reverse proxy or use an SSH tunnel (README: Security)", file=sys.stderr)
    # ui.launch runs `streamlit run app.py` with Streamlit's legacy pages/ mode off (deep links work)
    # Without a terminal Streamlit must not prompt for an e-mail address (it would wait on stdin, or fail on
    # /dev/null): headless never prompts.  Usage statistics are off by default (.streamlit/config.toml too).
    headless = args.headless if args.headless is not None else not _stdin_is_terminal()
    return [sys.executable, "-m", "ui.launch", "--server.address", args.address, "--server.port", str(args.port),
            "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false"]


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed stdin
        return False


def _labelstudio_client(args: argparse.Namespace):
    from pruning_core.labelstudio.client import LabelStudio

    if not args.url:
        raise ValueError("--url: Label Studio's address (or set LABEL_STUDIO_URL), e.g. http://127.0.0.1:8080")
    return LabelStudio(args.url, args.token or os.environ.get("LABEL_STUDIO_API_KEY", ""))


def _dataset_of(table) -> tuple[str, list[str]]:
    """A score table's dataset fingerprint and classes (sorted, as ``Dataset.classes``)."""
    from pruning_core.scoring.score_table import DATASET_SETTING

    fingerprint = (table.settings.get(DATASET_SETTING) or {}).get("fingerprint")
    if not fingerprint:
        raise ValueError("the score table does not name its dataset (written by an older version): score it again")
    return str(fingerprint), sorted(table.frame["label"].astype(str).unique())


def cmd_labelstudio_push(args: argparse.Namespace) -> int:
    """Send a queue (an Overview finding or a list of paths) to a Label Studio project, or to an import file."""
    from pruning_core.labelstudio.roundtrip import finding_paths, push, queue_frame, write_import_file
    from pruning_core.labelstudio.tasks import ImageSource
    from pruning_core.scoring.score_table import DATASET_SETTING, ScoreTable

    table = ScoreTable.load(args.scores)
    fingerprint, classes = _dataset_of(table)
    detector = None
    if args.queue:
        paths, detector = finding_paths(table.frame, table.infos, table.settings, args.queue)
    else:
        paths = _read_paths(Path(args.paths))
    frame = queue_frame(table.frame, paths)
    images = ImageSource(Path(args.images), Path(args.local_files) if args.local_files else None)
    if args.to_file:
        check_outputs({"tasks": Path(args.to_file)}, [args.scores])
        xml = write_import_file(Path(args.to_file), frame, classes, fingerprint, images, detector=detector)
        print(f"wrote {len(frame):,} tasks to {args.to_file} and the labelling config to {xml}: create the project "
              "with that config, then import the tasks file")
        return 0
    if not args.project:
        raise ValueError("--project: the Label Studio project to create or update")
    report = push(_labelstudio_client(args), args.project, frame, classes, fingerprint, images,
                  dataset_name=str((table.settings.get(DATASET_SETTING) or {}).get("name", "")), detector=detector)
    print(report.describe(args.project))
    return 0


def _read_paths(path: Path) -> list[str]:
    """Paths to queue: one per line, or a table (CSV/parquet) with a ``path`` column (a kept list, a report)."""
    if path.suffix.lower() in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
        if "path" not in frame:
            raise ValueError(f"{path}: no 'path' column")
        return frame["path"].astype(str).tolist()
    paths = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not paths:
        raise ValueError(f"{path}: no paths in it")
    return paths


def cmd_labelstudio_pull(args: argparse.Namespace) -> int:
    """Record a Label Studio project's annotations (from the server or an export file) as review decisions."""
    from pruning_core.audit.review import DecisionStore
    from pruning_core.labelstudio.roundtrip import fetch, pull, read_export_file
    from pruning_core.scoring.score_table import ScoreTable

    if not args.project:
        raise ValueError("--project: the Label Studio project to pull (its name is the decisions' source)")
    fingerprint = classes = None
    if args.scores:
        fingerprint, classes = _dataset_of(ScoreTable.load(args.scores))
    users, project_classes = None, None
    if args.from_file:
        if classes is None:
            raise ValueError("--from-file needs --scores SCORES (the dataset's classes and fingerprint)")
        tasks = read_export_file(Path(args.from_file))
    else:
        tasks, project_classes, users = fetch(_labelstudio_client(args), args.project)
        classes = classes if classes is not None else project_classes
    report = pull(DecisionStore(args.decisions), args.project, tasks, classes, users=users, fingerprint=fingerprint,
                  project_classes=project_classes)
    for line in report.lines():
        print(line)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    return subprocess.call(app_command(args))


def _device_arg(text: str) -> str:
    from pruning_core.runtime.devices import device_name

    try:
        return device_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cosine(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine threshold in (0, 1], got {text}")
    return value


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="where folds, grid runs and embedding batches run: this process, or a Ray cluster "
                             "(needs the ray extra: pip install -r requirements-ray.txt)")
    parser.add_argument("--ray-address", default=None,
                        help="with --executor ray: 'auto' (the cluster 'ray start' runs here), ray://HOST:10001, "
                             "or empty to start a local one ($RAY_ADDRESS is honoured)")


OVERWRITE_HELP = ("replace output files that exist and were not written by PruneScope (refused otherwise; "
                  "its own earlier outputs are always replaced)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunescope", description="Audit and prune image datasets.")
    parser.add_argument("--cache-dir", default=None, help="result store (default $PRUNESCOPE_CACHE or ~/.cache/prunescope)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build (or reuse) the built-in demo dataset and tiny CLIP")
    demo.add_argument("--dir", type=Path, default=None)
    demo.set_defaults(func=cmd_demo)

    from pruning_core.runtime.devices import PRECISIONS
    from pruning_core.dynamics.config import DynamicsConfig
    from pruning_core.dynamics.models import ARCHS
    from pruning_core.scoring.pipeline import ClipConfig
    from pruning_core.runtime.planner import DEFAULT_BUDGET_S
    from pruning_core.selection import STRATEGIES
    from pruning_core.subset_training.evaluate import EvalConfig
    from pruning_core.subset_training.evaluate import DEFAULT_KEEPS, DEFAULT_STRATEGIES, TRAINING_MODES
    from pruning_core.subset_training.runs import BUDGETS

    _DYN, _CLIP, _EVAL = DynamicsConfig(), ClipConfig(), EvalConfig()
    score = sub.add_parser("score", help="score every sample; writes a table and a .json sidecar")
    score.add_argument("data", help="image folder, CSV/parquet manifest (path,label[,caption]), parquet/arrow image "
                                    "tables, a save_to_disk folder, .tar shards (name-{000000..000009}.tar), or 'demo'")
    score.add_argument("--root", type=Path, default=None, help="root for relative manifest paths (default: its folder)")
    _add_format_args(score)
    score.add_argument("--out", required=True, type=Path,
                       help="score table (.parquet); its sidecar OUT.json and OUT.issues.csv are written next to it")
    score.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    score.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True, help="CLIP scores (default on)")
    score.add_argument("--clip-model", default=None, help=f"open_clip model name (default {_CLIP.model})")
    score.add_argument("--clip-pretrained", default=None,
                       help="open_clip pretrained tag, a local checkpoint path, or 'none' (random init)")
    score.add_argument("--adapter-epochs", type=int, default=_CLIP.adapter_epochs,
                       help=f"fit residual CLIP adapters on this dataset for N epochs before scoring "
                            f"(default {_CLIP.adapter_epochs}: off)")
    score.add_argument("--device", default=_CLIP.device, type=_device_arg,
                       help="auto (CUDA, else MPS, else CPU), cpu, mps, cuda or cuda:N")
    score.add_argument("--batch-size", type=int, default=_CLIP.batch_size, help="CLIP's batch")
    score.add_argument("--knn-k", type=_positive_int, default=_CLIP.k, metavar="K",
                       help=f"neighbours behind clip.outlier and clip.diversity (default {_CLIP.k})")
    score.add_argument("--duplicate-threshold", type=_cosine, default=_CLIP.dup_threshold, metavar="COS",
                       help=f"image cosine at or above which two samples are near duplicates "
                            f"(default {_CLIP.dup_threshold:g})")
    score.add_argument("--dynamics", action="store_true", help="train a proxy and add dynamics.* and cleanlab.* scores")
    score.add_argument("--image-quality", action="store_true",
                       help="CleanVision's image.* scores: dark, light, blurry, low information, odd aspect ratio, "
                            "odd size, grayscale (off by default: 55 s for 50,000 CIFAR-10 images on one core, "
                            "docs/benchmarks.md)")
    score.add_argument("--arch", default=_DYN.arch, choices=list(ARCHS),
                       help="proxy: resnet9 on images, or a probe on CLIP embeddings")
    score.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                       help=f"time for proxy training + cross-fitting (default {DEFAULT_BUDGET_S:.0f}); the settings "
                            "below that are not given are planned to fit it from a measured throughput; 0 = no "
                            "budget (unset settings take the full-size defaults)")
    score.add_argument("--epochs", type=int, default=None, help=f"proxy epochs (planned; full size {_DYN.epochs})")
    score.add_argument("--folds", type=int, default=None,
                       help=f"cross-fitting folds for cleanlab, 0 = skip (planned; full size {_DYN.folds})")
    score.add_argument("--crossfit-share", type=float, default=_DYN.crossfit_share, metavar="SHARE",
                       help=f"share of each class, ranked cleanest by the recording run, that the cross-fitting folds "
                            f"train on (default {_DYN.crossfit_share}; 1 = all of it, classic cross-fitting)")
    score.add_argument("--image-size", type=int, default=None,
                       help=f"working resolution of the proxy (planned; full size {_DYN.image_size})")
    score.add_argument("--width", type=int, default=None,
                       help=f"ResNet-9 base width (planned; full size {_DYN.width})")
    score.add_argument("--precision", default=_DYN.precision, choices=list(PRECISIONS),
                       help="arithmetic of the proxy and CLIP: auto = bf16 where the CPU/GPU computes bf16 in hardware, "
                            "fp16 (proxy with a GradScaler) on CUDA GPUs older than cc 8.0, else fp32; CLIP on a CPU "
                            "stays fp32 unless this is given")
    score.add_argument("--proxy-batch-size", type=int, default=None,
                       help=f"proxy batch size (planned; full size {_DYN.batch_size})")
    score.add_argument("--dynunc-window", type=int, default=_DYN.dynunc_window)
    score.add_argument("--seed", type=int, default=_DYN.seed)
    score.add_argument("--adapruner", type=float, default=None, metavar="RATIO",
                       help="learn an AdaPruner mask for keeping RATIO (adds adapruner.keep_logit; uses --epochs, "
                            "--image-size, --seed)")
    score.add_argument("--pred-probs", default=None, metavar="FILE",
                       help="your model's OUT-OF-SAMPLE (cross-validated) class probabilities: a .npy (N, C) in "
                            "dataset order, a .parquet/.csv with one column per class name (aligned on its id/path "
                            "column if it has one), or a manifest column of vectors; gives the cleanlab.* label "
                            "issues and suggested labels without training the proxy (rows must sum to 1)")
    score.add_argument("--features", default=None, metavar="FILE",
                       help="your model's embeddings: a .npy (N, D) in dataset order, a .parquet/.csv (aligned on "
                            "its id/path column), or a manifest column of vectors; adds features.outlier, "
                            "features.diversity and features.duplicate_* (k-NN in that space) and is the input of "
                            "--dynamics --arch probe")
    _add_executor_args(score)
    score.set_defaults(func=cmd_score)

    evaluate = sub.add_parser("evaluate", help="train the proxy on what each strategy keeps: accuracy-vs-ratio curves")
    evaluate.add_argument("data", help="image folder, CSV/parquet manifest, or 'demo'")
    evaluate.add_argument("--root", type=Path, default=None)
    _add_format_args(evaluate)
    evaluate.add_argument("--scores", type=Path, default=None,
                          help="score table of DATA from 'prunescope score' (needed by every strategy but random)")
    evaluate.add_argument("--test", default=None, help="held-out image folder or manifest (default: hold out --holdout)")
    evaluate.add_argument("--test-root", type=Path, default=None)
    evaluate.add_argument("--holdout", type=float, default=None,
                          help=f"stratified held-out fraction without --test (default {_EVAL.holdout}; the demo uses "
                               "its clean test set unless --holdout is given)")
    evaluate.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                          help=f"comma list of {', '.join([*STRATEGIES, *TRAINING_MODES])} (full data is always "
                               "run as the reference)")
    evaluate.add_argument("--keep", default=",".join(map(str, DEFAULT_KEEPS)), help="comma list of kept fractions")
    evaluate.add_argument("--seeds", type=int, default=_EVAL.seeds,
                          help=f"runs per strategy and ratio, for the spread and the significance marks "
                               f"(default {_EVAL.seeds})")
    evaluate.add_argument("--train-budget", default=_EVAL.budget, choices=list(BUDGETS),
                          help="; ".join(f"{k}: {v}" for k, v in BUDGETS.items()))
    evaluate.add_argument("--weights", default=None, help="col=w,... for the score-based strategies")
    evaluate.add_argument("--balance", action=argparse.BooleanOptionalAction, default=True,
                          help="class-balanced subsets (default on)")
    evaluate.add_argument("--budget", type=float, default=_EVAL.time_budget_s, metavar="SECONDS",
                          help=f"time for the whole grid (default {_EVAL.time_budget_s:.0f}); the proxy settings below "
                               "that are not given are planned to fit it; 0 = no budget (full-size settings)")
    evaluate.add_argument("--arch", default=_DYN.arch, choices=list(ARCHS),
                          help="evaluation proxy: resnet9 on images, or a probe on CLIP embeddings (seconds on a CPU)")
    evaluate.add_argument("--clip-model", default=None, help="CLIP for a probe (default: the score step's)")
    evaluate.add_argument("--clip-pretrained", default=None)
    evaluate.add_argument("--epochs", type=int, default=None, help=f"full-data epochs (planned; full size {_DYN.epochs})")
    evaluate.add_argument("--image-size", type=int, default=None,
                          help=f"proxy resolution (planned; full size {_DYN.image_size})")
    evaluate.add_argument("--width", type=int, default=None, help=f"ResNet-9 base width (planned; full size {_DYN.width})")
    evaluate.add_argument("--batch-size", type=int, default=None,
                          help=f"full-data batch; a subset's shrinks to keep a floor of steps per epoch (planned; "
                               f"full size {_DYN.batch_size})")
    evaluate.add_argument("--precision", default=_DYN.precision, choices=list(PRECISIONS))
    evaluate.add_argument("--seed", type=int, default=_DYN.seed)
    evaluate.add_argument("--device", default=_DYN.device, type=_device_arg,
                          help="auto (CUDA, else MPS, else CPU), cpu, mps, cuda or cuda:N")
    evaluate.add_argument("--out", required=True, type=Path, help="one row per run (.csv)")
    evaluate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _add_executor_args(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    select = sub.add_parser("select", help="choose the kept subset from a score table")
    select.add_argument("scores", nargs="?", type=Path,
                        help="score table written by 'prunescope score' (with --replay: in place of the one the "
                             "manifest names; it must have the same content)")
    select.add_argument("--keep", help="fraction in (0,1] or a count")
    select.add_argument("--strategy", default="easiest", choices=list(STRATEGIES), metavar="STRATEGY",
                        help="; ".join(f"{name}: {s.description}" for name, s in STRATEGIES.items())
                        + " (default easiest)")
    select.add_argument("--weights", default=None, help="col=w,... (default: all scores, equal weight)")
    select.add_argument("--balance", action="store_true", help="keep each class in proportion to its size")
    select.add_argument("--seed", type=int, default=0)
    from dataclasses import fields

    from pruning_core.clip_scores.cps import CPSConfig

    for f in fields(CPSConfig):
        select.add_argument(f"--cps-{f.name}", type=float, default=None,
                            help=f"with --strategy cps: {f.metadata['help']} (default {f.default:g})")
    select.add_argument("--fix-threshold", type=float, default=None,
                        help="with --strategy fix: relabel a sample whose suggested label has at least this calibrated "
                             "probability, drop the rest of the flagged set (default 0.9)")
    select.add_argument("--out", required=True, type=Path, help="kept list (.csv, .parquet or .json)")
    select.add_argument("--manifest", default=None, help="reproducibility manifest (default: OUT.manifest.json)")
    select.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    select.add_argument("--replay", default=None,
                        help="re-create the subset a manifest describes (from 'select' or the app's Export page): "
                             "same scores, recipe and recorded review decisions, or a one-line refusal")
    select.add_argument("--decisions", default=None,
                        help="review decisions (reviews.sqlite from the app): removed samples are never kept, "
                             "relabels are applied to the output")
    select.add_argument("--fingerprint", default=None,
                        help="with --decisions: the dataset fingerprint, when the file holds several datasets")
    select.add_argument("--decisions-from-other-dataset", action="store_true",
                        help="apply decisions made on another dataset (by path) instead of refusing them")
    select.set_defaults(func=cmd_select)

    report = sub.add_parser("report", help="the Overview's findings as a file to share (.html, .md or .json)")
    report.add_argument("scores", type=Path, help="score table written by 'prunescope score'")
    report.add_argument("--out", required=True, type=Path,
                        help="report.html (one self-contained file, thumbnails embedded), report.md or report.json")
    report.add_argument("--decisions", type=Path, default=None,
                        help="review decisions (SQLite) whose verdicts and audit picks the counts and estimates use")
    report.add_argument("--data", default=None,
                        help="the dataset the scores were made on (folder, manifest or 'demo'): thumbnails and "
                             "unreadable files")
    report.add_argument("--root", type=Path, default=None, help="root for relative manifest paths of --data")
    report.add_argument("--test", default=None,
                        help="a test set (folder or manifest) whose copies of --data's images the report lists as "
                             "train/test leakage; the other splits of a dataset that has them are always compared")
    report.add_argument("--test-root", type=Path, default=None, help="root for relative manifest paths of --test")
    _add_format_args(report)
    report.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    report.set_defaults(func=cmd_report)

    validate = sub.add_parser("validate", help="check a dataset and write its issues table, without scoring")
    validate.add_argument("data", help="image folder, CSV/parquet manifest, parquet/arrow image tables, a save_to_disk "
                                       "folder, .tar shards (name-{000000..000009}.tar), or 'demo'")
    validate.add_argument("--root", type=Path, default=None, help="root for relative manifest paths (default: its folder)")
    _add_format_args(validate)
    validate.add_argument("--out", type=Path, default=Path("issues.csv"),
                          help="issues table (.csv, .parquet or .json; default issues.csv)")
    validate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    validate.set_defaults(func=cmd_validate)

    from pruning_core.audit.leakage import LeakageConfig

    leakage = sub.add_parser("leakage", help="test samples that are copies of training samples (train/test leakage)")
    leakage.add_argument("train", help="training image folder or CSV/parquet manifest")
    leakage.add_argument("test", help="test image folder or CSV/parquet manifest")
    leakage.add_argument("--root", type=Path, default=None, help="root for the training manifest's relative paths")
    leakage.add_argument("--test-root", type=Path, default=None, help="root for the test manifest's relative paths")
    leakage.add_argument("--threshold", type=_cosine, default=LeakageConfig.threshold, metavar="COS",
                         help=f"pixel-thumbnail cosine at or above which a test image is a near copy of its nearest "
                              f"training image (default {LeakageConfig.threshold:g}, measured on CIFAR-10: "
                              "docs/benchmarks.md); exact copies are found by SHA-256 of the bytes")
    leakage.add_argument("--pixel-size", type=_positive_int, default=LeakageConfig.pixel_size, metavar="PX",
                         help=f"side of the thumbnails compared (default {LeakageConfig.pixel_size})")
    leakage.add_argument("--out", required=True, type=Path,
                         help="pairs table (.csv, .parquet or .json): train_id, test_id, cosine, kind (exact/near)")
    leakage.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    leakage.set_defaults(func=cmd_leakage)

    from pruning_core.distill.mdw import MDWConfig

    _MDW = MDWConfig()
    distill = sub.add_parser("distill", help="distil a captioned dataset into K synthetic image-text pairs (MDW)")
    distill.add_argument("data", help="CSV/parquet manifest with path,label,caption, or 'demo'")
    distill.add_argument("--root", type=Path, default=None, help="root for relative manifest paths (default: its folder)")
    distill.add_argument("--pairs", type=_positive_int, default=_MDW.pairs, help="K, the distilled pairs")
    distill.add_argument("--budget", type=float, default=600.0,
                         help="seconds for the whole command (experts + matching); too small a budget is refused "
                              "with the figures")
    distill.add_argument("--out", type=Path, required=True, help="folder for the distilled set and its manifest")
    distill.add_argument("--experts", type=_positive_int, default=_MDW.experts, help="expert runs to match")
    distill.add_argument("--expert-epochs", type=_positive_int, default=_MDW.expert_epochs,
                         help=f"epochs per expert run (at least max_start_epoch + expert_span = "
                              f"{_MDW.max_start_epoch + _MDW.expert_span})")
    distill.add_argument("--iterations", type=_positive_int, default=_MDW.iterations,
                         help="most matching iterations (the budget usually stops earlier)")
    distill.add_argument("--seed", type=int, default=_MDW.seed)
    distill.add_argument("--no-correspondence", action="store_true",
                         help="ablation: fixed diagonal pairing, no correspondence-weighted updates")
    distill.add_argument("--clip-model", default=None, help="open_clip model whose text tower embeds the captions")
    distill.add_argument("--clip-pretrained", default=None, help="its weights tag or checkpoint path")
    _add_format_args(distill)
    distill.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    distill.set_defaults(func=cmd_distill)

    cache = sub.add_parser("cache", help="list, verify or clear cached results")
    cache.add_argument("action", choices=["ls", "verify", "clear"],
                       help="verify: re-read every entry and partial chunk against its recorded size and checksum; "
                            "damaged ones move to the quarantine folder and are recomputed on next use (exit code "
                            f"{EXIT_DAMAGED_CACHE} when it found any)")
    cache.add_argument("--step", default=None, help="with clear: only this step (e.g. clip-images)")
    cache.add_argument("--key", action="append", default=None,
                       help="with clear: only this entry (the key 'cache ls' lists; repeat for several)")
    cache.set_defaults(func=cmd_cache)

    labelstudio = sub.add_parser("labelstudio", help="send a review queue to Label Studio, bring its annotations "
                                                     "back as decisions (README: Label Studio)")
    ls_sub = labelstudio.add_subparsers(dest="labelstudio_command", required=True)
    ls_server = argparse.ArgumentParser(add_help=False)
    ls_server.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                           help="Label Studio's address, e.g. http://127.0.0.1:8080 (default $LABEL_STUDIO_URL)")
    ls_server.add_argument("--token", default=None,
                           help="API token: Account & Settings → Access Token (default $LABEL_STUDIO_API_KEY)")
    ls_server.add_argument("--project", default=None, help="project title (created by push when missing)")
    push = ls_sub.add_parser("push", parents=[ls_server],
                             help="create or update a project with one task per queued sample (idempotent)")
    push.add_argument("scores", type=Path, help="score table from 'prunescope score'")
    which = push.add_mutually_exclusive_group(required=True)
    which.add_argument("--queue", help="an Overview finding: mislabelled, outliers, duplicates, caption mismatch")
    which.add_argument("--paths", help="file of paths to send: one per line, or a table with a 'path' column")
    push.add_argument("--images", required=True, help="folder the table's paths are relative to (the dataset root)")
    push.add_argument("--local-files", default=None, metavar="ROOT",
                      help="serve images from Label Studio's local-files storage under ROOT (its "
                           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) instead of embedding them as data URLs")
    push.add_argument("--to-file", default=None,
                      help="write Label Studio's JSON import file (and FILE.label_config.xml) instead of a server")
    push.set_defaults(func=cmd_labelstudio_push)
    pull = ls_sub.add_parser("pull", parents=[ls_server],
                             help="record each task's annotations as one decision (majority of its annotators)")
    pull.add_argument("--decisions", required=True, help="review decisions file (reviews.sqlite) to record into")
    pull.add_argument("--scores", default=None, type=Path,
                      help="score table: the project must be of its dataset and classes (needed with --from-file)")
    pull.add_argument("--from-file", default=None, help="a Label Studio JSON export file instead of a server")
    pull.set_defaults(func=cmd_labelstudio_pull)

    app = sub.add_parser("app", help="start the browser app")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--address", default=DEFAULT_ADDRESS,
                     help=f"interface to listen on (default {DEFAULT_ADDRESS}: this machine only); any other needs "
                          "--allow-remote")
    app.add_argument("--allow-remote", action="store_true",
                     help="allow a non-loopback --address: the app has no login, so guard it with an authenticating "
                          f"reverse proxy (README: Security); the app reads and writes only under ${ROOTS_ENV}")
    app.add_argument("--headless", action=argparse.BooleanOptionalAction, default=None,
                     help="do not open a browser and never ask anything on the terminal (default: headless when "
                          "stdin is not a terminal, e.g. under nohup or a service manager)")
    app.set_defaults(func=cmd_app)
    return parser


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, sqlite3.Error)
"""Errors a user can fix (bad input, missing file, refused request): one line and exit 2.

``DatasetError``, ``WeightsUnavailable``, ``ReviewError`` and ``UnsafeRequest`` are ``ValueError``s;
``FileNotFoundError`` is an ``OSError``.
"""


def one_line(exc: BaseException) -> str:
    """An error message on one line, whatever the library put in it."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pruning_core.runtime import executors
    from pruning_core.runtime.planner import process_started

    # A command line's budget starts with its interpreter; a call from a running program (a notebook, a test
    # session) starts it now, or the program's age would already have spent it.
    args.clock_started = process_started() if argv is None else time.monotonic()
    from pruning_core.runtime.progress import Cancelled

    try:
        with executors.using(executors.make_executor(getattr(args, "executor", "local"),
                                                     getattr(args, "ray_address", None))):
            return args.func(args)
    except (KeyboardInterrupt, Cancelled):
        print("prunescope: interrupted; finished chunks are cached, rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"prunescope: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if args.debug:
            raise
        print(f"prunescope: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
