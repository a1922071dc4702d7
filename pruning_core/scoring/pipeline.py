"""Scoring with the result store: every step looks up its cache entry before it computes.

The CLI and every app page go through these functions, so a result computed in one is
found by the other, and moving a slider or reopening the app never recomputes a step
whose inputs (dataset fingerprint, model, parameters, code version) are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.embeddings.clip_model import WeightsSource, clip_precision, load_clip, resolve_weights, source_identity
from pruning_core.data.datasets import Dataset, decoded_images, decoded_images_step
from pruning_core.data.images import load_image_array, spread_indices
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.embeddings.encode import batched_text_encoder, cached_chunks, embed_images
from pruning_core.image_quality import QualityConfig
from pruning_core.runtime.progress import CancelToken, ProgressCallback, report
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.audit.own_model import UserArray, in_sample_warning
from pruning_core.audit.suggest import with_suggestions
from pruning_core.clip_scores._common import unit_rows
from pruning_core.scoring.score_table import ScoreTable, base_table


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP to use and how to score with it (all fields are part of cache keys)."""

    model: str = "ViT-B-32"
    pretrained: Optional[str] = "laion2b_s34b_b79k"
    device: str = "auto"
    batch_size: int = 256
    templates: Optional[tuple[str, ...]] = None
    k: int = 10
    """Neighbours behind ``clip.outlier`` and ``clip.diversity``."""
    dup_threshold: float = 0.95
    """Image cosine at or above which two samples are near duplicates (``clip.duplicate_group``)."""
    adapter_epochs: int = 0
    """0 scores in CLIP's own space; more fits residual adapters on this dataset first (Yang et al.)."""
    precision: str = "auto"
    """CLIP weights' precision: ``auto`` = the device policy's on accelerators, fp32 on CPUs (``clip_model.clip_precision``)."""

    def identity(self, source: Optional[WeightsSource] = None) -> dict:
        """What makes this config's embeddings what they are (weights and resolved precision), without loading CLIP."""
        source = source or resolve_weights(self.model, self.pretrained)
        return source_identity(source, clip_precision(self.device, self.precision))


@dataclass
class ClipEmbeddings:
    """Cached CLIP outputs for one dataset: images, class prompts and (optional) captions."""

    image: np.ndarray
    image_ok: np.ndarray
    class_text: np.ndarray
    captions: Optional[np.ndarray]
    identity: dict = field(default_factory=dict)


def clip_images_step(dataset: Dataset, identity: dict) -> CachedStep:
    """Image embeddings by the CLIP ``identity`` (resumable: finished chunks survive a cancel)."""

    def chunks(folder: Path) -> Optional[str]:
        done, total = cached_chunks(folder, len(dataset))
        return f"{done} of {total} image-embedding chunks" if done else None

    return CachedStep("clip-images", dataset.fingerprint, identity, dataset=dataset.name,
                      label="the image embeddings", chunks=chunks)


def clip_embeddings(
    dataset: Dataset,
    config: ClipConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    source: Optional[WeightsSource] = None,
) -> ClipEmbeddings:
    """Image, class-prompt and caption embeddings, from the cache when known (CLIP is loaded only to compute)."""
    from pruning_core.clip_scores.prompts import DEFAULT_TEMPLATES, class_text_embeddings

    source = source or resolve_weights(config.model, config.pretrained)
    identity = config.identity(source)
    templates = tuple(config.templates or DEFAULT_TEMPLATES)
    image_step = clip_images_step(dataset, identity)
    text_step = CachedStep("clip-texts", dataset.fingerprint,
                           {**identity, "templates": templates, "classes": dataset.classes}, dataset=dataset.name)
    loaded = []

    def encoder():
        if not loaded:
            report(progress, "load CLIP", 0, 1, f"{config.model} ({source.label})")
            loaded.append(load_clip(config.model, config.pretrained, device=config.device, precision=config.precision))
            report(progress, "load CLIP", 1, 1)
        return loaded[0]

    def embed() -> Computed:
        emb, ok = embed_images(dataset.image_refs(), encoder(), chunk_dir=image_step.partial_dir(store),
                               batch_size=config.batch_size, progress=progress, cancel=cancel)
        return Computed(arrays={"image": emb, "ok": ok})

    def encode_texts() -> Computed:
        total = len(dataset.classes) * len(templates) + (len(dataset) if dataset.has_captions else 0)
        report(progress, "text embeddings", 0, total)
        encode = batched_text_encoder(encoder().encode_text, total, progress=progress, cancel=cancel)
        arrays = {"class_text": class_text_embeddings(dataset.classes, encode, templates)}
        if dataset.has_captions:
            arrays["captions"] = encode(dataset.samples["caption"].fillna("").astype(str).tolist())
        return Computed(arrays=arrays)

    image_entry = image_step.run(store, embed)
    text_entry = text_step.run(store, encode_texts)
    captions = text_entry.array("captions") if "captions" in text_entry.names() else None
    return ClipEmbeddings(
        image=image_entry.array("image"),
        image_ok=image_entry.array("ok"),
        class_text=text_entry.array("class_text"),
        captions=captions,
        identity=identity,
    )


CLIP_SCORES_SCHEMA = 2
"""Version of the clip-scores step's output columns, part of its cache key: raised whenever they change (2: the
per-class zero-shot probabilities the suggestions read), so an entry an older version wrote is recomputed, never
served without them."""


def clip_score_table(
    dataset: Dataset,
    config: ClipConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """The ``clip.*`` columns for every sample (cached on top of the cached embeddings)."""
    from pruning_core.clip_scores import clip_scores

    emb = clip_embeddings(dataset, config, store, progress=progress, cancel=cancel)
    params = {**emb.identity, "k": config.k, "dup_threshold": config.dup_threshold,
              "templates": list(config.templates or ()), "adapter_epochs": config.adapter_epochs,
              "schema": CLIP_SCORES_SCHEMA}

    def score() -> Computed:
        image, class_text = np.nan_to_num(emb.image), emb.class_text  # an undecodable image aligns with nothing
        captions = emb.captions
        if config.adapter_epochs > 0:
            adapter = fit_adapter(dataset, emb, config, store, progress=progress, cancel=cancel)
            image, class_text = adapter.transform_images(image), adapter.transform_text(class_text)
            captions = adapter.transform_text(captions) if captions is not None else None
        frame, infos = clip_scores(
            image,
            dataset.label_ids,
            dataset.classes,
            class_text,
            captions_emb=captions,
            k=config.k,
            dup_threshold=config.dup_threshold,
            device=config.device,
            progress=progress,
            cancel=cancel,
        )
        return Computed(frames={"scores": frame}, meta={"infos": {n: asdict(i) for n, i in infos.items()}})

    entry = CachedStep("clip-scores", dataset.fingerprint, params, dataset=dataset.name).run(store, score)
    infos = {n: ScoreInfo(**i) for n, i in entry.meta["infos"].items()}
    # The model and weights identity, adapter and k-NN settings reach the sidecar and the manifest from here.
    return ScoreTable(entry.frame("scores"), infos, settings={"clip": params})


def fit_adapter(
    dataset: Dataset,
    emb: ClipEmbeddings,
    config: ClipConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
):
    """Residual image/text adapters fitted on this dataset's embeddings, labels and captions (cached).

    A fresh fit is returned as the cache holds it (rebuilt from its saved state), so the first run
    and every later one score with the same adapter.
    """
    from pruning_core.clip_scores.adapter import ClipAdapter

    params = {**emb.identity, "epochs": config.adapter_epochs, "templates": list(config.templates or ())}

    def fit() -> Computed:
        adapter = ClipAdapter(device=config.device).fit(
            np.nan_to_num(emb.image), dataset.label_ids, emb.class_text, captions_emb=emb.captions,
            epochs=config.adapter_epochs, progress=progress, cancel=cancel,
        )
        return Computed(arrays=adapter.state_dict(), meta={"loss_history": adapter.loss_history_})

    entry = CachedStep("clip-adapter", dataset.fingerprint, params, dataset=dataset.name).run(store, fit)
    return ClipAdapter.from_state_dict({name: entry.array(name) for name in entry.names()}, device=config.device)


DYNAMICS_RECORD_SCHEMA = 2
"""Version of what the proxy-training record holds, part of its cache key: raised whenever it changes meaning (2:
every epoch's statistics but the last come from the training pass), so an older entry is retrained, never mixed in."""


CROSSFIT_SCHEMA = 2
"""Version of how the cross-fitting folds train, part of their cache key (2: each fold's batch is planned for the
samples it trains on, ``planner.planned_batch_size``)."""


def _dynamics_params(config: DynamicsConfig, clip_identity: Optional[dict]) -> dict:
    """Cache parameters of proxy training: its config, the precision it resolves to here, and its inputs."""
    from pruning_core.runtime.devices import resolve_device, resolve_precision

    params = {**config.training_params(), "precision": resolve_precision(resolve_device(config.device), config.precision)}
    if config.arch == "resnet9":
        return {**params, "input": f"images{config.image_size}"}
    return {**params, "input": "clip-image", **(clip_identity or {})}


def dynamics_steps(dataset: Dataset, config: DynamicsConfig, clip_identity: Optional[dict]
                   ) -> tuple[CachedStep, CachedStep]:
    """The proxy-training record and the cross-fitted probabilities (resumable by fold) of ``config``."""
    from pruning_core.dynamics.crossfit import cached_folds

    params = _dynamics_params(config, clip_identity)

    def folds_done(folder: Path) -> Optional[str]:
        done = cached_folds(folder, config.folds)
        return f"{done} of {config.folds} cross-fitting folds" if done else None

    record = {**params, "record_schema": DYNAMICS_RECORD_SCHEMA}
    # Cleaned folds train on what the record ranks cleanest: keyed by the record's own key, so a retrained
    # record is never paired with folds trained on another record's choice.
    folds = {**params, "crossfit_schema": CROSSFIT_SCHEMA}
    if config.crossfit_share < 1:
        folds.update(record_schema=DYNAMICS_RECORD_SCHEMA, crossfit_share=config.crossfit_share)
    return (CachedStep("dynamics-record", dataset.fingerprint, record, dataset=dataset.name,
                       label="the proxy-training record"),
            CachedStep("dynamics-oos", dataset.fingerprint, folds, dataset=dataset.name,
                       label="the cross-fitted probabilities", chunks=folds_done))


def decoding_seconds(dataset: Dataset, store: ResultStore, sample: int = 256, warmup: int = 8
                     ) -> Callable[[DynamicsConfig], float]:
    """The planner's ``overhead_s``: seconds a candidate's dynamics step will spend decoding images (0 when cached).

    Timed once, at the first size asked, on ``sample`` files spread evenly over the dataset (after ``warmup``
    untimed ones: a process's first decodes pay for PIL's plugins and cold caches), resized from the pixels the
    load kept where it kept them (:attr:`Dataset.kept_pixels`), then scaled to the dataset:
    the budget covers decoding, so a first run on 50,000 JPEGs plans less training (bench/bench_first_load.py
    prints this estimate beside the decoding it estimates).
    """
    per_image: list[float] = []

    def seconds(config: DynamicsConfig) -> float:
        if config.arch != "resnet9" or decoded_images_step(dataset, config.image_size).is_cached(store):
            return 0.0
        if not per_image:
            refs, kept = dataset.image_refs(), dataset.kept_pixels
            load_image_array(refs[:warmup], config.image_size, workers=1)
            spread = spread_indices(len(refs), sample)
            t0 = time.perf_counter()
            load_image_array([refs[i] for i in spread], config.image_size,
                             pixels=None if kept is None else [kept[i] for i in spread])
            per_image.append((time.perf_counter() - t0) / max(1, len(spread)))
        return per_image[0] * len(dataset)

    return seconds


def dynamics_score_table(
    dataset: Dataset,
    config: DynamicsConfig,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    features: Optional[UserArray] = None,
    budget_spent_s: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """Training-dynamics scores from cached per-epoch records, plus cleanlab issues from cross-fitting.

    A probe proxy trains on the user's ``features`` (unit rows, keyed by their SHA-256) when given,
    else on CLIP's image embeddings.

    ``config.budget_s`` covers the whole step, decoding included: its clock starts here, less
    ``budget_spent_s`` already spent on it before (loading and probing: the plan's ``spent_s``).
    """
    step_started = time.monotonic()
    from pruning_core.dynamics import dynamics_scores, label_issue_scores, out_of_sample_probs, train_and_record
    from pruning_core.dynamics.crossfit import BudgetSpent, cleanest_by_class
    from pruning_core.dynamics.label_issues import estimated_issue_count
    from pruning_core.dynamics.noise import NOISE_SCORE, noise_scores, softmax
    from pruning_core.dynamics.trainer import TrainingRecord
    from pruning_core.runtime.planner import TAIL_SHARE, format_seconds

    if config.arch == "resnet9":
        x = decoded_images(dataset, config.image_size, store, progress=progress, cancel=cancel)
        identity = None
    elif features is not None:
        x, identity = unit_rows(features.values), {"input": "features", "features_sha256": features.source["sha256"]}
    else:
        if clip is None:
            raise ValueError(f"the {config.arch!r} probe trains on CLIP embeddings (or --features): give a CLIP "
                             "model too")
        emb = clip_embeddings(dataset, clip, store, progress=progress, cancel=cancel)
        x, identity = np.nan_to_num(emb.image), emb.identity
    record_step, oos_step = dynamics_steps(dataset, config, identity)
    train = {**config.trainer_options(), "num_classes": len(dataset.classes)}
    y = dataset.label_ids
    deadline = (step_started + config.budget_s * (1 - TAIL_SHARE) - budget_spent_s  # the tail: scores, the table
                if config.budget_s is not None else None)

    def train_record() -> Computed:
        record = train_and_record(x, y, deadline=deadline, max_epochs=config.max_epochs, progress=progress,
                                  cancel=cancel, **train)
        return Computed(arrays=record.to_arrays(), meta={**record.meta, "finished_at": time.time()})

    entry = record_step.run(store, train_record)
    record = TrainingRecord.from_arrays(entry, entry.meta)
    frame, infos = dynamics_scores(record, dynunc_window=config.dynunc_window, classes=dataset.classes)
    record_probs = softmax(record.final_logits)
    source = "the proxy's last-epoch probabilities"
    noise_frame, noise_infos, noise_settings = noise_scores(record.labels, record_probs, dataset.classes, source=source)
    notes = []
    if record.meta.get("stopped_by_budget"):
        notes.append(f"The {format_seconds(config.budget_s)} budget stopped proxy training after "
                     f"{record.n_epochs} of {config.epochs} epochs: give a larger budget or fewer epochs.")
    settings = {"dynamics": {**record_step.params, "epochs_done": record.n_epochs,
                             "train_seconds": record.meta.get("train_seconds"),
                             "samples_trained": record.meta.get("samples_trained"),
                             "finished_at": record.meta.get("finished_at"), "device": record.meta.get("device"),
                             "data_on_device": record.meta.get("data_on_device")}}
    if config.folds >= 2:
        trusted = cleanest_by_class(noise_frame[NOISE_SCORE].to_numpy(), y, config.crossfit_share)

        def cross_fit() -> Computed:
            return Computed(arrays={"probs": out_of_sample_probs(
                x, y, folds=config.folds, fold_cache=oos_step.partial_dir(store), trusted=trusted, deadline=deadline,
                progress=progress, cancel=cancel, **train)})

        try:
            oos = oos_step.run(store, cross_fit)
        except BudgetSpent as exc:
            notes.append(f"No cleanlab scores: {exc}.")
        else:
            oos_probs = oos.array("probs")
            cl_frame, cl_infos = label_issue_scores(y, oos_probs, dataset.classes)
            frame, infos = pd.concat([frame, cl_frame], axis=1), {**infos, **cl_infos}
            settings["cleanlab"] = estimated_issue_count(y, oos_probs)
            trained_on = ("" if config.crossfit_share >= 1
                          else f" trained on the cleanest {config.crossfit_share:.0%} of each class")
            noise_frame, noise_infos, noise_settings = noise_scores(
                record.labels, [record_probs, oos_probs.astype(np.float64)], dataset.classes,
                source=f"{source}, averaged with the {config.folds} cross-fitted models'{trained_on}")
    frame, infos = pd.concat([frame, noise_frame], axis=1), {**infos, **noise_infos}
    return ScoreTable(frame.set_axis(dataset.samples.index), infos, notes, {**settings, "noise": noise_settings})


IMAGE_QUALITY_SCHEMA = 3
"""Raised when the image-quality columns change meaning; 2: ``image.blurry`` leaves out the edge image's border;
3: ``image.blurry`` is relative to the image's contrast."""


def image_quality_step(dataset: Dataset, config: QualityConfig) -> CachedStep:
    """The cache step of :func:`image_quality_score_table`: keyed by the dataset's content, CleanVision's
    version, every parameter it is given (thresholds, normalising factors) and :data:`IMAGE_QUALITY_SCHEMA`."""
    from cleanvision import __version__

    return CachedStep("image-quality", dataset.fingerprint, {"cleanvision": __version__,
                                                             "params": config.score_params(),
                                                             "schema": IMAGE_QUALITY_SCHEMA},
                      dataset=dataset.name, label="the image-quality scores")


def image_quality_score_table(
    dataset: Dataset,
    config: QualityConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """The ``image.*`` columns (CleanVision: dark, light, blurry, ...), cached by the dataset's content."""
    from pruning_core.image_quality import quality_scores, score_infos

    def compute() -> Computed:
        frame, _, settings = quality_scores(dataset.image_refs(), config, progress=progress, cancel=cancel)
        return Computed(frames={"scores": frame}, meta={"settings": settings})

    entry = image_quality_step(dataset, config).run(store, compute)
    return ScoreTable(entry.frame("scores").set_axis(dataset.samples.index), score_infos(),
                      settings={"image": entry.meta["settings"]})


FEATURES_FAMILY = "features"
"""Family of the k-NN scores computed on a user's embeddings (``features.outlier``, ...), apart from ``clip.*``."""


def pred_probs_score_table(dataset: Dataset, probs: UserArray) -> ScoreTable:
    """cleanlab's label issues and the suggested labels from a user's out-of-sample probabilities (no proxy).

    The same producer as the cross-fitted proxy's (``label_issue_scores``), so the columns equal
    running cleanlab on these arrays; ``settings["cleanlab"]["pred_probs"]`` records the file by
    SHA-256, and a note warns when the probabilities look in-sample.
    """
    from pruning_core.dynamics import label_issue_scores
    from pruning_core.dynamics.label_issues import estimated_issue_count
    from pruning_core.dynamics.noise import noise_scores

    y = dataset.label_ids
    frame, infos = label_issue_scores(y, probs.values, dataset.classes)
    noise_frame, noise_infos, noise_settings = noise_scores(y, probs.values, dataset.classes,
                                                            source="your model's out-of-sample probabilities")
    frame, infos = pd.concat([frame, noise_frame], axis=1), {**infos, **noise_infos}
    settings = {"cleanlab": {**estimated_issue_count(y, probs.values), "pred_probs": probs.source},
                "noise": noise_settings}
    warning = in_sample_warning(y, probs.values)
    return ScoreTable(frame.set_axis(dataset.samples.index), infos, [f"warning: {warning}"] if warning else [],
                      settings)


def features_score_table(
    dataset: Dataset,
    features: UserArray,
    *,
    k: int = ClipConfig.k,
    dup_threshold: float = ClipConfig.dup_threshold,
    device: str = "cpu",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """The k-NN outlier, duplicate and diversity scores in a user's embedding space (``features.*``).

    Computed by the very function behind ``clip.*`` (``clip_scores.knn_scores``) on the user's rows;
    ``settings["features"]`` records the file by SHA-256 with k and the duplicate cosine.
    """
    from pruning_core.clip_scores import knn_scores

    cols, infos = knn_scores(unit_rows(features.values), dataset.label_ids, k=k, dup_threshold=dup_threshold,
                             family=FEATURES_FAMILY, device=device, progress=progress, cancel=cancel,
                             space="In your --features embeddings: ")
    frame = pd.DataFrame(cols, index=dataset.samples.index)
    return ScoreTable(frame, infos, settings={FEATURES_FAMILY: {**features.source, "k": k,
                                                                 "dup_threshold": dup_threshold}})


def own_model_score_table(
    dataset: Dataset,
    *,
    pred_probs: Optional[UserArray] = None,
    features: Optional[UserArray] = None,
    knn: Optional[ClipConfig] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """What a user's own model adds: ``features.*`` (k-NN in its embeddings, with ``knn``'s k and duplicate
    cosine) and ``cleanlab.*`` from its probabilities; columns only, to be merged onto a table.

    The one producer behind ``prunescope score --pred-probs/--features`` (:func:`score_dataset`) and the
    Score page's "Your model's outputs", so both give the same columns and settings.
    """
    knn = knn or ClipConfig()
    table = ScoreTable(pd.DataFrame(index=dataset.samples.index), {})
    if features is not None:
        table = table.merged(features_score_table(dataset, features, k=knn.k, dup_threshold=knn.dup_threshold,
                                                  progress=progress, cancel=cancel))
    if pred_probs is not None:
        table = table.merged(pred_probs_score_table(dataset, pred_probs))
    return table


def score_dataset(
    dataset: Dataset,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    dynamics: Optional[DynamicsConfig] = None,
    adapruner: Optional[tuple[float, DynamicsConfig]] = None,
    image_quality: Optional[QualityConfig] = None,
    pred_probs: Optional[UserArray] = None,
    features: Optional[UserArray] = None,
    dynamics_spent_s: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """All requested score families joined onto the sample columns.

    ``pred_probs`` (a user's out-of-sample probabilities) gives the ``cleanlab.*`` columns instead of
    the cross-fitted proxy, so it excludes ``dynamics``; ``features`` (a user's embeddings) adds the
    ``features.*`` k-NN scores (with ``clip``'s k and duplicate cosine) and is a probe proxy's input.

    ``adapruner`` is ``(keep ratio, proxy)``: the learned mask's column (its proxy trains without
    cross-fitting, so it is planned apart from ``dynamics``).  ``dynamics_spent_s``: the part of the
    dynamics budget its plan already spent (``dynamics_score_table``'s ``budget_spent_s``).
    """
    from pruning_core.subset_training.mask_scores import adapruner_score_table

    if pred_probs is not None and dynamics is not None:
        raise ValueError("--pred-probs and --dynamics both give the cleanlab.* scores: choose one")
    table = base_table(dataset)
    if image_quality is not None:
        table = table.merged(image_quality_score_table(dataset, image_quality, store, progress=progress, cancel=cancel))
    if clip is not None:
        table = table.merged(clip_score_table(dataset, clip, store, progress=progress, cancel=cancel))
    if pred_probs is not None or features is not None:
        table = table.merged(own_model_score_table(dataset, pred_probs=pred_probs, features=features, knn=clip,
                                                   progress=progress, cancel=cancel))
    if dynamics is not None:
        table = table.merged(dynamics_score_table(dataset, dynamics, store, clip=clip, features=features,
                                                  budget_spent_s=dynamics_spent_s, progress=progress, cancel=cancel))
    if adapruner is not None:
        ratio, proxy = adapruner
        table = table.merged(adapruner_score_table(dataset, ratio, proxy, store, progress=progress, cancel=cancel))
    return with_suggestions(table)  # over every probability source the run produced


def scoring_steps(
    dataset: Dataset,
    *,
    clip: Optional[ClipConfig] = None,
    dynamics: Optional[DynamicsConfig] = None,
    image_quality: Optional[QualityConfig] = None,
) -> list[CachedStep]:
    """The steps of a scoring run whose work outlives a cancel, in the order the run takes them.

    Built by the step functions the scoring functions call, so a key here is the key the run writes.
    The long steps only: the text embeddings take seconds, and the adapter and the CLIP scores
    are the CLIP job's last steps.
    """
    identity = clip.identity() if clip is not None else None
    steps = [image_quality_step(dataset, image_quality)] if image_quality is not None else []
    steps += [clip_images_step(dataset, identity)] if identity is not None else []
    if dynamics is not None:
        if dynamics.arch == "resnet9":
            steps.append(decoded_images_step(dataset, dynamics.image_size))
        record, oos = dynamics_steps(dataset, dynamics, identity)
        steps += [record, oos] if dynamics.folds >= 2 else [record]
    return steps


def kept_work(
    dataset: Dataset,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    dynamics: Optional[DynamicsConfig] = None,
    image_quality: Optional[QualityConfig] = None,
) -> list[str]:
    """What an interrupted scoring run left for the next one, read from the store rather than assumed.

    The app tells the user this after a cancel: each step of :func:`scoring_steps` says whether
    its entry is finished or, for resumable steps, how many chunks or folds are.
    """
    return [kept for step in scoring_steps(dataset, clip=clip, dynamics=dynamics, image_quality=image_quality)
            if (kept := step.kept(store)) is not None]
