"""Scoring with the result store: every step looks up its cache entry before it computes.

The CLI and every app page go through these functions, so a result computed in one is
found by the other, and moving a slider or reopening the app never recomputes a step
whose inputs (dataset fingerprint, model, parameters, code version) are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from cache.store import ResultStore, atomic_write_bytes, make_key
from pruning_core.clip_model import WeightsSource, clip_precision, load_clip, resolve_weights, source_identity
from pruning_core.datasets import Dataset
from pruning_core.embeddings import cached_chunks, embed_images
from pruning_core.export import table_bytes
from pruning_core.progress import CancelToken, ProgressCallback, report
from pruning_core.safety import check_outputs
from pruning_core.score_info import ScoreInfo, read_sidecar, read_sidecar_settings, write_sidecar

SAMPLE_COLUMNS = ("path", "label", "caption")
SCORES_SUFFIX = ".parquet"
DATASET_SETTING = "dataset"
"""The settings entry that names the scored dataset (its fingerprint), next to the score families."""


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP to use and how to score with it (all fields are part of cache keys)."""

    model: str = "ViT-B-32"
    pretrained: Optional[str] = "laion2b_s34b_b79k"
    device: str = "auto"
    batch_size: int = 256
    templates: Optional[tuple[str, ...]] = None
    k: int = 10
    dup_threshold: float = 0.95
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


@dataclass
class ScoreTable:
    """Samples with their score columns, plus what each score means (the sidecar)."""

    frame: pd.DataFrame
    infos: dict[str, ScoreInfo]
    notes: list[str] = field(default_factory=list)
    """What the user should know about how these scores were made (e.g. a budget cut a step short)."""
    settings: dict = field(default_factory=dict)
    """How each score family was made, by family (``{"dynamics": {...}}``): kept in the sidecar."""

    @staticmethod
    def output_paths(path: Path) -> dict[str, Path]:
        """Every file ``prunescope score --out PATH`` writes, by role; refuses a name that is not ``.parquet``.

        The sidecar (``.json``) and the issues list (``.issues.csv``) sit next to the table under
        its stem, so only a ``.parquet`` name guarantees the three never land on one file.
        """
        path = Path(path)
        if path.suffix.lower() != SCORES_SUFFIX:
            raise ValueError(f"{path}: a score table is written as parquet; give --out a name ending in "
                             f"{SCORES_SUFFIX} (its sidecar .json and .issues.csv go next to it)")
        outputs = {"scores": path, "sidecar": path.with_suffix(".json"), "issues": path.with_suffix(".issues.csv")}
        check_outputs(outputs)
        return outputs

    def save(self, path: Path) -> Path:
        """Write ``path`` (parquet) and its ``.json`` sidecar atomically; returns the sidecar path."""
        outputs = self.output_paths(path)
        outputs["scores"].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(outputs["scores"], table_bytes(self.frame, "parquet"))
        write_sidecar(outputs["sidecar"], self.infos, self.settings)
        return outputs["sidecar"]

    @classmethod
    def load(cls, path: Path) -> "ScoreTable":
        """A table written by :meth:`save` (``.csv`` tables of older versions load too); bad files raise
        ``ValueError``/``FileNotFoundError`` naming the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"score table not found: {path}")
        try:
            frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
        except Exception as exc:  # pyarrow and the csv parser raise many types for one cause: a damaged file
            raise ValueError(f"{path}: not a readable score table ({type(exc).__name__}: {exc})") from None
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: the score table has no {' or '.join(repr(c) for c in missing)} column "
                             "(write it with 'prunescope score')")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path} has no sidecar {sidecar.name}: it says which direction each score points")
        infos = {name: info for name, info in read_sidecar(sidecar).items() if name in frame}
        return cls(frame, infos, settings=read_sidecar_settings(sidecar))

    def merged(self, other: "ScoreTable") -> "ScoreTable":
        new_cols = [c for c in other.frame.columns if c not in self.frame.columns]
        frame = pd.concat([self.frame, other.frame[new_cols].set_axis(self.frame.index)], axis=1)
        return ScoreTable(frame, {**self.infos, **other.infos}, [*self.notes, *other.notes],
                          {**self.settings, **other.settings})


def base_table(dataset: Dataset) -> ScoreTable:
    """The sample columns every score table starts from (path, label, caption, extras).

    Its settings name the dataset (``settings["dataset"]["fingerprint"]``), so review decisions
    applied to the table later can be checked against the data they were made on.
    """
    return ScoreTable(dataset.samples.copy(), {},
                      settings={DATASET_SETTING: {"fingerprint": dataset.fingerprint, "name": dataset.name}})


def _clip_params(config: ClipConfig, identity: dict) -> dict:
    return {**identity, "batch_size": config.batch_size}


def _image_key(dataset: Dataset, identity: dict) -> str:
    return make_key("clip-images", dataset.fingerprint, identity)


def clip_embeddings(
    dataset: Dataset,
    config: ClipConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    source: Optional[WeightsSource] = None,
) -> ClipEmbeddings:
    """Image, class-prompt and caption embeddings, from the cache when known."""
    from pruning_core.clip_scores.prompts import DEFAULT_TEMPLATES, class_text_embeddings

    source = source or resolve_weights(config.model, config.pretrained)
    identity = config.identity(source)
    templates = tuple(config.templates or DEFAULT_TEMPLATES)
    image_key = _image_key(dataset, identity)
    text_key = make_key("clip-texts", dataset.fingerprint, {**identity, "templates": templates, "classes": dataset.classes})
    image_entry, text_entry = store.load(image_key), store.load(text_key)
    encoder = None
    if image_entry is None or text_entry is None:
        report(progress, "load CLIP", 0, 1, f"{config.model} ({source.label})")
        encoder = load_clip(config.model, config.pretrained, device=config.device, precision=config.precision)
        report(progress, "load CLIP", 1, 1)
    if image_entry is None:
        emb, ok = embed_images(
            dataset.abspaths(),
            encoder,
            chunk_dir=store.partial_dir(image_key),
            batch_size=config.batch_size,
            progress=progress,
            cancel=cancel,
        )
        image_entry = store.save(
            image_key,
            arrays={"image": emb, "ok": ok},
            meta={"step": "clip-images", "dataset": dataset.name, "fingerprint": dataset.fingerprint, "params": identity},
        )
    if text_entry is None:
        report(progress, "text embeddings", 0, 1)
        arrays = {"class_text": class_text_embeddings(dataset.classes, encoder.encode_text, templates)}
        if dataset.has_captions:
            arrays["captions"] = encoder.encode_text(dataset.samples["caption"].fillna("").astype(str).tolist())
        text_entry = store.save(
            text_key,
            arrays=arrays,
            meta={"step": "clip-texts", "dataset": dataset.name, "fingerprint": dataset.fingerprint,
                  "params": {**identity, "templates": list(templates)}},
        )
        report(progress, "text embeddings", 1, 1)
    captions = text_entry.array("captions") if "captions" in text_entry.names() else None
    return ClipEmbeddings(
        image=image_entry.array("image"),
        image_ok=image_entry.array("ok"),
        class_text=text_entry.array("class_text"),
        captions=captions,
        identity=identity,
    )


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
              "templates": list(config.templates or ()), "adapter_epochs": config.adapter_epochs}
    key = make_key("clip-scores", dataset.fingerprint, params)
    entry = store.load(key)
    if entry is None:
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
        entry = store.save(
            key,
            frames={"scores": frame},
            meta={"step": "clip-scores", "dataset": dataset.name, "fingerprint": dataset.fingerprint, "params": params,
                  "infos": {n: asdict(i) for n, i in infos.items()}},
        )
    infos = {n: ScoreInfo(**i) for n, i in entry.meta["infos"].items()}
    return ScoreTable(entry.frame("scores"), infos, settings={"clip": params})  # k, threshold...: sidecar, manifest


def fit_adapter(
    dataset: Dataset,
    emb: ClipEmbeddings,
    config: ClipConfig,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
):
    """Residual image/text adapters fitted on this dataset's embeddings, labels and captions (cached)."""
    from pruning_core.clip_scores.adapter import ClipAdapter

    params = {**emb.identity, "epochs": config.adapter_epochs, "templates": list(config.templates or ())}
    key = make_key("clip-adapter", dataset.fingerprint, params)
    entry = store.load(key)
    if entry is not None:
        return ClipAdapter.from_state_dict({name: entry.array(name) for name in entry.names()}, device=config.device)
    adapter = ClipAdapter(device=config.device).fit(
        np.nan_to_num(emb.image), dataset.label_ids, emb.class_text, captions_emb=emb.captions,
        epochs=config.adapter_epochs, progress=progress, cancel=cancel,
    )
    store.save(key, arrays=adapter.state_dict(),
               meta={"step": "clip-adapter", "dataset": dataset.name, "fingerprint": dataset.fingerprint,
                     "params": params, "loss_history": adapter.loss_history_})
    return adapter


@dataclass(frozen=True)
class DynamicsConfig:
    """Proxy training for the ``dynamics.*`` and ``cleanlab.*`` columns (all fields but device key the cache)."""

    arch: str = "resnet9"  # or "mlp" / "linear": a probe on CLIP image embeddings
    epochs: int = 16
    folds: int = 4  # cross-fitting folds for out-of-sample probabilities; 0 skips cleanlab
    image_size: int = 32
    width: int = 64
    batch_size: int = 512
    dynunc_window: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """``auto`` = bf16 autocast where the hardware computes bf16 (``devices.resolve_precision``), or ``fp32``."""
    budget_s: Optional[float] = None
    """Wall-clock seconds for training and cross-fitting: a run stops when they are spent (within one
    epoch).  ``pruning_core.planner.plan_dynamics`` picks settings that fit it; None runs as set."""

    def training_params(self) -> dict:
        params = asdict(self)
        params.pop("device")
        params.pop("dynunc_window")  # derived from the cached records, never retrained for
        return params


def _images_key(dataset: Dataset, size: int) -> str:
    return make_key("images", dataset.fingerprint, {"size": size})


def decoded_images(
    dataset: Dataset,
    size: int,
    store: ResultStore,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """All images decoded once at ``size`` x ``size`` (uint8, N x H x W x 3), cached for every later run."""
    from pruning_core.images import load_image_array

    key = _images_key(dataset, size)
    entry = store.load(key)
    if entry is None:
        images, failed = load_image_array(dataset.abspaths(), size, progress=progress, cancel=cancel)
        entry = store.save(key, arrays={"images": images},
                           meta={"step": "images", "dataset": dataset.name, "fingerprint": dataset.fingerprint,
                                 "params": {"size": size}, "failed": {str(k): v for k, v in failed.items()}})
    return entry.array("images")


def _dynamics_params(config: DynamicsConfig, clip_identity: Optional[dict]) -> dict:
    """Cache parameters of proxy training: its config, the precision it resolves to here, and its inputs."""
    from pruning_core.devices import resolve_device, resolve_precision

    params = {**config.training_params(), "precision": resolve_precision(resolve_device(config.device), config.precision)}
    if config.arch == "resnet9":
        return {**params, "input": f"images{config.image_size}"}
    return {**params, "input": "clip-image", **(clip_identity or {})}


def dynamics_score_table(
    dataset: Dataset,
    config: DynamicsConfig,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """Training-dynamics scores from cached per-epoch records, plus cleanlab issues from cross-fitting."""
    from pruning_core.dynamics import dynamics_scores, label_issue_scores, out_of_sample_probs, train_and_record
    from pruning_core.dynamics.crossfit import BudgetSpent
    from pruning_core.dynamics.trainer import TrainingRecord
    from pruning_core.planner import format_seconds

    if config.arch == "resnet9":
        x = decoded_images(dataset, config.image_size, store, progress=progress, cancel=cancel)
        identity = None
    else:
        if clip is None:
            raise ValueError(f"the {config.arch!r} probe trains on CLIP embeddings: give a CLIP model too")
        emb = clip_embeddings(dataset, clip, store, progress=progress, cancel=cancel)
        x, identity = np.nan_to_num(emb.image), emb.identity
    params = _dynamics_params(config, identity)
    train = dict(arch=config.arch, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                 device=config.device, num_classes=len(dataset.classes), width=config.width, precision=config.precision)
    y = dataset.label_ids
    meta = {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "params": params}

    deadline = time.monotonic() + config.budget_s if config.budget_s is not None else None
    key = make_key("dynamics-record", dataset.fingerprint, params)
    entry = store.load(key)
    if entry is None:
        record = train_and_record(x, y, deadline=deadline, progress=progress, cancel=cancel, **train)
        entry = store.save(key, arrays=record.to_arrays(), meta={"step": "dynamics-record", **meta, **record.meta})
    record = TrainingRecord.from_arrays(entry, entry.meta)
    frame, infos = dynamics_scores(record, dynunc_window=config.dynunc_window)
    notes = []
    if record.meta.get("stopped_by_budget"):
        notes.append(f"The {format_seconds(config.budget_s)} budget stopped proxy training after "
                     f"{record.n_epochs} of {config.epochs} epochs: give a larger budget or fewer epochs.")
    settings = {"dynamics": {**params, "epochs_done": record.n_epochs, "train_seconds": record.meta.get("train_seconds"),
                             "device": record.meta.get("device"), "data_on_device": record.meta.get("data_on_device")}}
    table = ScoreTable(frame.set_axis(dataset.samples.index), infos, notes, settings)

    if config.folds >= 2:
        oos_key = make_key("dynamics-oos", dataset.fingerprint, params)
        oos = store.load(oos_key)
        if oos is None:
            try:
                probs = out_of_sample_probs(x, y, folds=config.folds, fold_cache=store.partial_dir(oos_key),
                                            deadline=deadline, progress=progress, cancel=cancel, **train)
            except BudgetSpent as exc:
                table.notes.append(f"No cleanlab scores: {exc}.")
                return table
            oos = store.save(oos_key, arrays={"probs": probs}, meta={"step": "dynamics-oos", **meta})
        cl_frame, cl_infos = label_issue_scores(y, oos.array("probs"), dataset.classes)
        table = table.merged(ScoreTable(cl_frame.set_axis(dataset.samples.index), cl_infos))
    return table


def score_dataset(
    dataset: Dataset,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    dynamics: Optional[DynamicsConfig] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """All requested score families joined onto the sample columns."""
    table = base_table(dataset)
    if clip is not None:
        table = table.merged(clip_score_table(dataset, clip, store, progress=progress, cancel=cancel))
    if dynamics is not None:
        table = table.merged(dynamics_score_table(dataset, dynamics, store, clip=clip, progress=progress, cancel=cancel))
    return table


def kept_work(
    dataset: Dataset,
    store: ResultStore,
    *,
    clip: Optional[ClipConfig] = None,
    dynamics: Optional[DynamicsConfig] = None,
) -> list[str]:
    """What an interrupted scoring run left for the next one, read from the store rather than assumed.

    The app tells the user this after a cancel.  Finished steps are whole cache entries; image
    embeddings also keep finished chunks and cross-fitting keeps finished folds.  Everything else
    (CLIP scores, the adapter, one proxy training) reruns from its start.
    """
    from pruning_core.dynamics.crossfit import cached_folds

    kept: list[str] = []
    fp = dataset.fingerprint
    identity = clip.identity() if clip is not None else None
    if identity is not None:
        key = _image_key(dataset, identity)
        done, total = cached_chunks(store.partial_root / key, len(dataset))
        if store.load(key) is not None:
            kept.append("the image embeddings")
        elif done:
            kept.append(f"{done} of {total} image-embedding chunks")
    if dynamics is not None:
        params = _dynamics_params(dynamics, identity)
        if dynamics.arch == "resnet9" and store.load(_images_key(dataset, dynamics.image_size)) is not None:
            kept.append("the decoded images")
        if store.load(make_key("dynamics-record", fp, params)) is not None:
            kept.append("the proxy-training record")
        oos_key = make_key("dynamics-oos", fp, params)
        folds = cached_folds(store.partial_root / oos_key, dynamics.folds)
        if dynamics.folds >= 2 and store.load(oos_key) is not None:
            kept.append("the cross-fitted probabilities")
        elif dynamics.folds >= 2 and folds:
            kept.append(f"{folds} of {dynamics.folds} cross-fitting folds")
    return kept


def score_columns(frame: pd.DataFrame, infos: Mapping[str, ScoreInfo]) -> list[str]:
    """Numeric score columns that have a direction: what UIs offer for colouring and weighting."""
    return [c for c in frame.columns if c in infos and pd.api.types.is_numeric_dtype(frame[c])]
