"""Distillation as a PruneScope job: inputs from the cache, experts and the synthetic set cached, planned, resumable.

``distill_dataset`` is what the CLI (``prunescope distill``) and the bench run:

1. inputs: the dataset's images decoded at the tiny CLIP's 32 px (``datasets.decoded_images``, cached) and
   its caption embeddings by the scoring CLIP (``pipeline.clip_embeddings``, cached); caption alignment from
   the same embeddings weights the experts;
2. experts (step ``distill-experts``): each expert's trajectory is a chunk in the step's partial folder, so an
   interrupted run keeps the finished experts;
3. the start (:func:`starting_state`): the K pairs that cover the experts' image space, with the experts'
   correspondence between them;
4. the start's validation (:func:`validated_start`): fresh students trained on the start (at each of
   ``MDWConfig.start_step_factors`` × the real pairs' step, then each of ``given_pairing_shares``) retrieve
   held-out likely-matched real pairs; the start is set at its best settings, and the figures are kept in the
   step's partial folder, so a resumed run rebuilds the start instead of training its students again;
5. matching (step ``distill``) from that start: the synthetic set is checkpointed to the step's partial folder
   every few iterations and on any interrupt (Ctrl-C included); a rerun resumes from the checkpoint.  The
   draws of iteration i depend on i only, so a resumed run takes the same steps an uninterrupted one would;
6. the matched set's validation: students trained on it retrieve the same held-out pairs; the start or the
   matched set, whichever students do better on, is kept, and the entry's meta records every figure.

Time budget: ``budget_s`` bounds the whole command (its clock starts with the process, as ``score
--budget``).  Before any work a probe times one expert minibatch step, one matching iteration and a few
validation student steps; the plan (experts' time + the start's validation + iterations that fit + the
matched set's validation) is reported, and a budget that cannot hold the experts, ``MIN_ITERATIONS``
iterations and the validation is refused with the figures.  The matching loop then stops at the deadline (or
at ``MDWConfig.iterations``), keeping back the matched set's validation at the pace the start's students just
ran at (measured beside whatever else the machine runs now, not by the probe), and the iterations it expects
are planned again at that point; the budget and the settings key the cache, the iterations reached are
recorded in the entry's meta.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cache.steps import CachedStep, Computed
from cache.store import ResultStore, atomic_save_npy, atomic_write_bytes, read_chunk
from pruning_core.data.datasets import Dataset, decoded_images
from pruning_core.demo.tiny_clip import TINY_CLIP_IMAGE_SIZE, create_tiny_clip, preprocess_uint8
from pruning_core.distill.mdw import (MDWConfig, SyntheticState, TrajectoryMatcher, alignment_weights,
                                      coverage_start, distilled_pairs, expert_correspondence, expert_features,
                                      given_pairing_mix, initial_state, real_log_step, train_expert)
from pruning_core.distill.student import EVAL_BATCH, retrieval_recall, train_student
from pruning_core.runtime.planner import format_seconds
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report
from pruning_core.scoring.pipeline import ClipConfig, clip_embeddings

MIN_ITERATIONS = 10
"""Fewest matching iterations a budget must hold (fewer leave the synthetic set where it started)."""
CHECKPOINT_EVERY = 5
"""Matching iterations between checkpoints (and one on every interrupt)."""
PLAN_STAGE = "distillation plan"
VALIDATION_MARGIN = 1.15
"""The matched set's validation is kept back at this many times the pace the start's students ran at (a
machine's load drifts by that much within minutes; the planner's ETAs promise 15 %)."""
START_VALIDATION_FILE = "start_validation.json"


@dataclass(frozen=True)
class DistillInputs:
    """The real pairs in the student's terms, and what names them."""

    images: torch.Tensor
    """Normalised (N, 3, 32, 32) images, undecodable rows dropped."""
    texts: torch.Tensor
    """(N, d) caption embeddings by the scoring CLIP's text tower."""
    alignment: np.ndarray
    """cos(image, caption) by the scoring CLIP: ``clip.caption_alignment``."""
    captions: np.ndarray
    rows: np.ndarray
    """Rows of ``dataset.samples`` these pairs are."""
    fingerprint: str
    identity: dict


def distill_inputs(dataset: Dataset, clip: ClipConfig, store: ResultStore, *,
                   progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> DistillInputs:
    """The dataset's decodable captioned pairs as student inputs (everything cached by the steps it calls)."""
    if not dataset.has_captions:
        raise ValueError(f"{dataset.name}: distillation needs a caption column (image–text pairs)")
    emb = clip_embeddings(dataset, clip, store, progress=progress, cancel=cancel)
    pixels = decoded_images(dataset, TINY_CLIP_IMAGE_SIZE, store, progress=progress, cancel=cancel)
    captions = dataset.samples["caption"].fillna("").astype(str).to_numpy()
    usable = np.asarray(emb.image_ok, dtype=bool) & (captions != "")
    rows = np.flatnonzero(usable)
    image = np.asarray(emb.image, dtype=np.float32)[rows]
    text = np.asarray(emb.captions, dtype=np.float32)[rows]
    image /= np.linalg.norm(image, axis=1, keepdims=True) + 1e-12
    text /= np.linalg.norm(text, axis=1, keepdims=True) + 1e-12
    return DistillInputs(images=preprocess_uint8(create_tiny_clip(0), np.asarray(pixels)[rows]),
                         texts=torch.from_numpy(np.ascontiguousarray(text)),
                         alignment=(image * text).sum(axis=1), captions=captions[rows], rows=rows,
                         fingerprint=dataset.fingerprint, identity=emb.identity)


def _expert_params(config: MDWConfig) -> dict:
    keys = ("experts", "expert_epochs", "expert_batch", "expert_lr", "robust_experts", "seed")
    return {k: getattr(config, k) for k in keys}


def experts_step(inputs: DistillInputs, config: MDWConfig) -> CachedStep:
    """The expert trajectories of ``inputs`` under ``config`` (resumable: one chunk per expert)."""

    def chunks(folder: Path) -> Optional[str]:
        done = len(list(folder.glob("expert_*.npy")))
        return f"{done} of {config.experts} expert runs" if done else None

    return CachedStep("distill-experts", inputs.fingerprint, {**inputs.identity, **_expert_params(config)},
                      label="the expert trajectories", chunks=chunks)


COVERAGE_OF_MATCHED = "coverage of likely-matched pairs"
COVERAGE = "coverage"
"""How :func:`starting_state` picks the start when the caller gives none (a distill entry's ``params["start"]``;
a caller's own start is keyed by its digest instead)."""


def distill_step(inputs: DistillInputs, config: MDWConfig, budget_s: float,
                 start: Optional[np.ndarray] = None) -> CachedStep:
    """The distilled set of ``inputs`` under ``config`` and ``budget_s`` (resumable: a checkpoint)."""
    if start is None:
        start_rule = COVERAGE_OF_MATCHED if config.learn_correspondence else COVERAGE
    else:
        start_rule = hashlib.sha256(np.sort(np.asarray(start, dtype=np.int64)).tobytes()).hexdigest()

    def chunks(folder: Path) -> Optional[str]:
        saved = _read_checkpoint(folder)
        return f"a checkpoint at matching iteration {saved[0].iteration}" if saved else None

    return CachedStep("distill", inputs.fingerprint,
                      {**inputs.identity, **config.as_dict(), "budget_s": float(budget_s), "start": start_rule,
                       "matching_from": "the validated start" if config.validation_pairs else "the start"},
                      label="the distilled set", chunks=chunks)


def expert_trajectories(inputs: DistillInputs, config: MDWConfig, store: ResultStore, *,
                        progress: Optional[ProgressCallback] = None,
                        cancel: Optional[CancelToken] = None) -> np.ndarray:
    """``(experts, epochs + 1, P)`` trajectories, cached; finished experts survive an interrupt."""
    step = experts_step(inputs, config)
    weights = torch.from_numpy(alignment_weights(inputs.alignment)) if config.robust_experts else None

    def compute() -> Computed:
        folder = step.partial_dir(store)
        runs = []
        for e in range(config.experts):
            path = folder / f"expert_{e}.npy"
            trajectory = read_chunk(path)
            if trajectory is None:
                def epoch_done(epoch: int, e: int = e) -> None:
                    report(progress, "expert runs", e * config.expert_epochs + epoch,
                           config.experts * config.expert_epochs, f"expert {e + 1} of {config.experts}")
                trajectory = train_expert(inputs.images, inputs.texts, weights, config, seed=config.seed + e,
                                          cancel=cancel, on_epoch=epoch_done)
                atomic_save_npy(path, trajectory)
            runs.append(trajectory)
        return Computed(arrays={"trajectories": np.stack(runs)})

    return np.asarray(step.run(store, compute).array("trajectories"))


@dataclass(frozen=True)
class DistillPlan:
    """What the probe measured and what fits the budget."""

    budget_s: float
    expert_s: float
    """Estimated seconds for the experts still to train (0 when cached)."""
    iteration_s: float
    iterations: int
    """Matching iterations expected within the budget (the deadline decides)."""
    start_validation_s: float
    """Estimated seconds for the students that validate the start (before matching)."""
    matched_validation_s: float
    """Estimated seconds for the students that validate the matched set, kept out of the matching's time."""

    def line(self) -> str:
        matching = f"~{self.iterations} matching iterations of ~{self.iteration_s:.1f} s"
        if not self.start_validation_s:
            return f"budget {format_seconds(self.budget_s)}: experts ~{format_seconds(self.expert_s)}, then {matching}"
        return (f"budget {format_seconds(self.budget_s)}: experts ~{format_seconds(self.expert_s)}, validation of "
                f"the start ~{format_seconds(self.start_validation_s)}, then {matching}, then validation of the "
                f"matched set ~{format_seconds(self.matched_validation_s)}")

    def as_dict(self) -> dict[str, Any]:
        return {"budget_s": self.budget_s, "expert_s": round(self.expert_s, 1),
                "iteration_s": round(self.iteration_s, 3), "iterations": self.iterations,
                "start_validation_s": round(self.start_validation_s, 1),
                "matched_validation_s": round(self.matched_validation_s, 1)}


def plan_distillation(inputs: DistillInputs, config: MDWConfig, store: ResultStore, budget_s: float,
                      left_s: float) -> DistillPlan:
    """Time one expert minibatch step and one matching iteration; fit the iterations into ``left_s`` seconds."""
    experts_cached = experts_step(inputs, config).is_cached(store)
    probe = replace(config, experts=1, expert_epochs=config.max_start_epoch + config.expert_span)
    n = len(inputs.images)
    batch = min(config.expert_batch, n)
    started = time.perf_counter()
    expert_step_s = 0.0
    if not experts_cached:
        idx = torch.arange(batch)
        train_expert(inputs.images[idx], inputs.texts[idx], None, probe, seed=0)  # one step per epoch
        expert_step_s = (time.perf_counter() - started) / probe.expert_epochs
    expert_s = config.experts * config.expert_epochs * (n // batch) * expert_step_s
    fake = np.zeros((1, probe.expert_epochs + 1, _parameter_count(inputs)), dtype=np.float32)
    k = min(config.pairs, n)
    start = initial_state(inputs.images.numpy(), inputs.texts.numpy(), np.arange(k), np.zeros((k, k), np.float32))
    matcher = TrajectoryMatcher(probe, fake + np.arange(probe.expert_epochs + 1, dtype=np.float32)[None, :, None],
                                start)
    timed = time.perf_counter()
    matcher.matching_loss(*matcher.draw()).backward()
    iteration_s = time.perf_counter() - timed
    student_s = 0.0
    if config.validation_pairs:
        pairs = distilled_pairs(start, learn_correspondence=False)
        train_student(pairs, steps=1, batch_size=EVAL_BATCH, seed=0)  # the first student pays one-time set-up
        timed = time.perf_counter()
        train_student(pairs, steps=3, batch_size=EVAL_BATCH, seed=0)
        student_s = config.validation_steps * (time.perf_counter() - timed) / 3
    start_validation_s = start_validation_sets(config) * config.validation_seeds * student_s
    matched_validation_s = config.validation_seeds * student_s
    validation_s = start_validation_s + matched_validation_s
    room = left_s - (time.perf_counter() - started) - expert_s - validation_s
    fits = int(room // iteration_s) if room > 0 else 0
    plan = DistillPlan(budget_s, expert_s, iteration_s, min(config.iterations, fits), start_validation_s,
                       matched_validation_s)
    if fits < min(MIN_ITERATIONS, config.iterations):
        need = (time.perf_counter() - started) + expert_s + MIN_ITERATIONS * iteration_s + validation_s
        raise ValueError(f"--budget {budget_s:g}: too small for this distillation ({plan.line()}); it needs at "
                         f"least ~{math.ceil(need + budget_s - left_s)} s for {MIN_ITERATIONS} iterations "
                         "(or fewer --experts / --pairs)")
    return plan


def _parameter_count(inputs: DistillInputs) -> int:
    from pruning_core.distill.student import Student

    return sum(p.numel() for p in Student(int(inputs.texts.shape[1]), seed=0).parameters())


_STATE_ARRAYS = ("images", "texts", "correspondence", "source_index")


def _write_checkpoint(folder: Path, matcher: TrajectoryMatcher, spent_s: float) -> None:
    """Arrays first, the optimiser next, the scalars last: the scalars' file says a checkpoint is whole."""
    state = matcher.state
    for name in _STATE_ARRAYS:
        atomic_save_npy(folder / f"{name}.npy", np.asarray(getattr(state, name)))
    atomic_save_npy(folder / "losses.npy", np.asarray(state.losses, dtype=np.float64))
    tmp = folder / f".optimizer.{uuid.uuid4().hex}.tmp"
    torch.save(matcher.optimizer.state_dict(), tmp)
    os.replace(tmp, folder / "optimizer.pt")
    atomic_write_bytes(folder / "checkpoint.json", json.dumps(
        {"iteration": state.iteration, "log_lr": state.log_lr, "spent_s": spent_s}).encode())


def _read_checkpoint(folder: Path) -> Optional[tuple[SyntheticState, dict, float]]:
    """``(state, optimiser state, seconds spent)`` of a whole checkpoint, else None (start afresh)."""
    try:
        scalars = json.loads((folder / "checkpoint.json").read_text())
        arrays = {name: read_chunk(folder / f"{name}.npy") for name in (*_STATE_ARRAYS, "losses")}
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    except (OSError, ValueError, RuntimeError):
        return None
    if any(a is None for a in arrays.values()) or len(arrays["losses"]) != scalars["iteration"]:
        return None
    state = SyntheticState(images=arrays["images"], texts=arrays["texts"], correspondence=arrays["correspondence"],
                           log_lr=float(scalars["log_lr"]), source_index=arrays["source_index"],
                           iteration=int(scalars["iteration"]), losses=[float(v) for v in arrays["losses"]])
    return state, optimizer, float(scalars["spent_s"])


@dataclass(frozen=True)
class DistilledSet:
    """A finished distilled set (as the cache holds it) and how it was made."""

    state: SyntheticState
    meta: dict
    key: str

    @property
    def learn_correspondence(self) -> bool:
        return bool(self.meta["params"]["learn_correspondence"])


def distill_dataset(inputs: DistillInputs, config: MDWConfig, store: ResultStore, *, budget_s: float,
                    start: Optional[np.ndarray] = None, started: Optional[float] = None,
                    progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None) -> DistilledSet:
    """The distilled set of ``inputs``: cached, else planned to ``budget_s``, resumed from a checkpoint, saved.

    ``start``: the K pairs (indices into ``inputs``) the set starts from; None: K random ones.
    ``started`` is the ``time.monotonic()`` the budget counts from (the CLI: the process start); None: now.
    """
    clock_start = time.monotonic() if started is None else started
    step = distill_step(inputs, config, budget_s, start)
    entry = step.load(store)
    if entry is None:
        folder = step.partial_dir(store)
        saved = _read_checkpoint(folder)
        spent_before = saved[2] if saved else 0.0
        deadline = clock_start + budget_s - spent_before
        plan = plan_distillation(inputs, config, store, budget_s, deadline - time.monotonic())
        resumed = f"; resuming at matching iteration {saved[0].iteration}" if saved else ""
        report(progress, PLAN_STAGE, 1, 1, plan.line() + resumed)
        entry = step.run(store, lambda: _compute(inputs, config, store, plan, saved, start, deadline, folder,
                                                 progress, cancel))
    return DistilledSet(state=SyntheticState(
        images=entry.array("images"), texts=entry.array("texts"), correspondence=entry.array("correspondence"),
        log_lr=float(entry.meta["log_lr"]), source_index=entry.array("source_index"),
        iteration=int(entry.meta["iterations"]), losses=[float(v) for v in entry.array("losses")]),
        meta=entry.meta, key=step.key)


def _compute(inputs: DistillInputs, config: MDWConfig, store: ResultStore, plan: DistillPlan,
             saved: Optional[tuple[SyntheticState, dict, float]], start: Optional[np.ndarray], deadline: float,
             folder: Path,
             progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> Computed:
    """Experts, the start's validation, then matching from that start until the deadline (a checkpoint every few
    iterations and on any interrupt), then the matched set's validation."""
    began = time.monotonic()
    spent_before = saved[2] if saved else 0.0
    trajectories = expert_trajectories(inputs, config, store, progress=progress, cancel=cancel)
    source = start_rows(inputs, trajectories, config, start)
    rows = validation_rows(inputs, source, config)
    begun, validation, student_s = _validated_start_once(inputs, trajectories, config, source, rows, folder, plan,
                                                         progress, cancel)
    state, optimizer = (saved[0], saved[1]) if saved else (replace(begun, losses=[]), None)
    matcher = TrajectoryMatcher(config, trajectories, state, optimizer)

    def spent() -> float:
        return spent_before + time.monotonic() - began

    timing = {"first": state.iteration, "since": time.monotonic(), "slowest": plan.iteration_s}
    matched_validation_s = VALIDATION_MARGIN * config.validation_seeds * student_s  # 0 without validation

    def checkpoint(m: TrajectoryMatcher) -> None:
        done = m.state.iteration - timing["first"]
        timing["slowest"] = max(timing["slowest"], (time.monotonic() - timing["since"]) / done)
        if m.state.iteration % CHECKPOINT_EVERY == 0:
            _write_checkpoint(folder, m, spent())

    def out_of_time() -> bool:
        """Stop when one more iteration, at the slower of the probe's and this run's pace, would leave too little
        time for the matched set's validation at the pace the start's students ran at."""
        return time.monotonic() + timing["slowest"] + matched_validation_s > deadline

    expected = min(config.iterations, state.iteration + max(
        0, int((deadline - time.monotonic() - matched_validation_s) // plan.iteration_s)))
    if config.validation_pairs:
        report(progress, PLAN_STAGE, 1, 1, f"the start's students ran at ~{student_s:.0f} s each: ~{expected} matching "
               f"iterations in all, then the matched set's validation ~{format_seconds(matched_validation_s)}")
    try:
        matcher.fit(config.iterations, expected=expected, deadline=out_of_time, progress=progress, cancel=cancel,
                    on_iteration=checkpoint)
    except BaseException:
        _write_checkpoint(folder, matcher, spent())
        raise
    matched = matcher.state
    kept = matched
    if config.validation_pairs:
        report(progress, "validating the matched set", 0, 1, f"{config.validation_seeds} fresh students")
        validation["matched"] = set_value(matched, inputs, rows, config, cancel)
        kept = matched if validation["matched"] > validation["start"] else begun
    check(cancel)
    return Computed(
        arrays={"images": kept.images, "texts": kept.texts, "correspondence": kept.correspondence,
                "source_index": inputs.rows[kept.source_index], "losses": np.asarray(matched.losses)},
        meta={"log_lr": kept.log_lr, "iterations": matched.iteration, "seconds": round(spent(), 1),
              "plan": {**plan.as_dict(), "iterations_after_start_validation": expected}, "validation": validation,
              "kept": "matched" if kept is matched else "start",
              "stopped_by": "iterations" if matched.iteration >= config.iterations else "budget"})


def _validated_start_once(inputs: DistillInputs, trajectories: np.ndarray, config: MDWConfig, source: np.ndarray,
                          rows: np.ndarray, folder: Path, plan: DistillPlan, progress: Optional[ProgressCallback],
                          cancel: Optional[CancelToken]) -> tuple[SyntheticState, dict, float]:
    """``(start, validation figures, seconds per validation student)``: validated once per run, the figures kept
    in ``folder`` so that a resumed run rebuilds the start from them instead of training its students again.

    Without validation (``validation_pairs`` 0): the start at the real pairs' step and the first share.
    """
    if not config.validation_pairs:
        return starting_state(inputs, trajectories, config, source), {}, 0.0
    path = folder / START_VALIDATION_FILE
    try:
        saved = json.loads(path.read_text())
        figures, student_s = dict(saved["figures"]), float(saved["student_s"])
        return (start_at(inputs, trajectories, config, source, figures["start_step_factor"],
                         figures.get("start_pairing_share")), figures, student_s)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    students = start_validation_sets(config) * config.validation_seeds
    report(progress, "validating the start", 0, 1, f"{students} fresh students (each step size and given-pairing "
           f"share), ~{format_seconds(plan.start_validation_s)}")
    timed = time.monotonic()
    chosen, figures = validated_start(inputs, trajectories, config, source, rows, cancel)
    student_s = (time.monotonic() - timed) / students
    atomic_write_bytes(path, json.dumps({"figures": figures, "student_s": student_s}).encode())
    return chosen, figures, student_s


def validated_start(inputs: DistillInputs, trajectories: np.ndarray, config: MDWConfig, source_index: np.ndarray,
                    rows: np.ndarray, cancel: Optional[CancelToken] = None) -> tuple[SyntheticState, dict]:
    """The start of ``source_index`` at the step size, then the given-pairing share, its students do best with.

    Step sizes (``MDWConfig.start_step_factors``) are tried at the first share, then the other shares
    (``given_pairing_shares``; none for the ablation, whose diagonal has no share) at the chosen step: a search
    one setting at a time, which costs one set of students per value instead of one per combination.  Returns the
    chosen start and the validation's figures (``start`` is its value).
    """
    begun = starting_state(inputs, trajectories, config, source_index)
    by_factor = {factor: set_value(replace(begun, log_lr=real_log_step(factor)), inputs, rows, config, cancel)
                 for factor in config.start_step_factors}
    factor = max(by_factor, key=by_factor.get)
    shares = validated_shares(config)
    candidates = {shares[0]: (replace(begun, log_lr=real_log_step(factor)), by_factor[factor])}
    for share in shares[1:]:
        state = start_at(inputs, trajectories, config, source_index, factor, share)
        candidates[share] = (state, set_value(state, inputs, rows, config, cancel))
    share = max(candidates, key=lambda s: candidates[s][1])
    chosen, value = candidates[share]
    figures = {"pairs": len(rows), "start": value, "start_step_factor": factor,
               "start_by_step_factor": {f"{f:g}": v for f, v in by_factor.items()}}
    if config.learn_correspondence:
        figures |= {"start_pairing_share": share,
                    "start_by_pairing_share": {f"{s:g}": v for s, (_, v) in candidates.items()}}
    return chosen, figures


def start_at(inputs: DistillInputs, trajectories: np.ndarray, config: MDWConfig, source_index: np.ndarray,
             factor: float, share: Optional[float]) -> SyntheticState:
    """The start of ``source_index`` with ``share`` on the given pairing, at ``factor`` × the real pairs' step."""
    return replace(starting_state(inputs, trajectories, config, source_index, share=share),
                   log_lr=real_log_step(factor))


def start_validation_sets(config: MDWConfig) -> int:
    """How many versions of the start its validation trains students on: each step size, then each further share."""
    return len(config.start_step_factors) + len(validated_shares(config)) - 1


def validated_shares(config: MDWConfig) -> tuple[float, ...]:
    """The given-pairing shares validation tries: all of ``config``'s, or only the first for the ablation (its
    diagonal has no share)."""
    return config.given_pairing_shares if config.learn_correspondence else config.given_pairing_shares[:1]


def starting_state(inputs: DistillInputs, trajectories: np.ndarray, config: MDWConfig,
                   start: Optional[np.ndarray] = None, share: Optional[float] = None) -> SyntheticState:
    """Where matching starts: the pairs :func:`start_rows` picks with the experts' correspondence, ``share``
    of it (None: the first of ``config.given_pairing_shares``) left on the given pairing.

    A function of the inputs, the experts and ``config`` only, so validation rebuilds it instead of storing it.
    """
    index = start_rows(inputs, trajectories, config, start)
    correspondence = given_pairing_mix(
        expert_correspondence(*expert_features(trajectories, inputs.images[index], inputs.texts[index])),
        config.given_pairing_shares[0] if share is None else share)
    return initial_state(inputs.images.numpy(), inputs.texts.numpy(), index, correspondence)


def start_rows(inputs: DistillInputs, trajectories: np.ndarray, config: MDWConfig,
               start: Optional[np.ndarray] = None) -> np.ndarray:
    """The K real pairs the set starts from, sorted: ``start``, or (None) :func:`mdw.coverage_start`'s, passing
    over likely mismatches unless ``config`` is the correspondence-off ablation."""
    if start is None:
        image_features, _ = expert_features(trajectories, inputs.images, inputs.texts)
        weights = alignment_weights(inputs.alignment) if config.learn_correspondence else None
        start = coverage_start(image_features, weights, config.pairs, config.seed)
    return np.sort(np.asarray(start, dtype=np.int64))


def validation_rows(inputs: DistillInputs, source_index: np.ndarray, config: MDWConfig) -> np.ndarray:
    """Up to ``validation_pairs`` likely-matched real pairs (alignment weight ≥ 0.5) the set did not start from.

    The students scored on them train on the synthetic set only, so for them these pairs are held out.
    """
    candidates = np.setdiff1d(np.flatnonzero(alignment_weights(inputs.alignment) >= 0.5), source_index)
    size = min(config.validation_pairs, len(candidates))
    return np.sort(np.random.default_rng(config.seed).choice(candidates, size=size, replace=False))


def set_value(state: SyntheticState, inputs: DistillInputs, rows: np.ndarray, config: MDWConfig,
              cancel: Optional[CancelToken] = None) -> float:
    """Mean image→text and text→image recall@1 on ``rows`` of students trained on ``state`` (validation seeds)."""
    pairs = distilled_pairs(state, learn_correspondence=config.learn_correspondence)
    idx = torch.from_numpy(rows)
    values = []
    for seed in range(config.validation_seeds):
        model = train_student(pairs, steps=config.validation_steps, batch_size=EVAL_BATCH, seed=seed, cancel=cancel)
        recall = retrieval_recall(model, inputs.images[idx], inputs.texts[idx], inputs.captions[rows], ks=(1,))
        values.append((recall["i2t@1"] + recall["t2i@1"]) / 2)
    return round(float(np.mean(values)), 4)
