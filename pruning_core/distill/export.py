"""A distilled set out of the cache: viewable pixels, nearest real captions, and a folder with its manifest.

The exported folder (``prunescope distill --out DIR``)::

    DIR/images/NNNN.png            the K synthetic images to look at (32 px, de-normalised to 8-bit RGB)
    DIR/images.npy                 the same K images as the set holds them: normalised float32 (K, 3, 32, 32)
    DIR/texts.npy                  K × d text vectors (the scoring CLIP's text-tower output space)
    DIR/correspondence.npy         K × K joint soft correspondence P (rows: images, columns: texts): what a student
                                   trains towards
    DIR/correspondence_logits.npy  the K × K logits P is the softmax of (what the distillation learned)
    DIR/losses.npy                 the matching loss of every iteration
    DIR/pairs.csv                  one row per synthetic pair: image, its best text by P and that text's confidence,
                                   the real row it started from, the three nearest real captions of its own text
    DIR/distilled.manifest.json    the manifest: export.manifest.Manifest of kind ``distilled`` (dataset, CLIP
                                   identity, settings, budget, plan, iterations, learned step, cache key, and the
                                   SHA-256 of every file above)

The PNGs are for people (8 bits lose the pixels' precision); :func:`read_distilled` reads the set back from the
arrays, bit for bit, after checking every file against the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pruning_core.data.arrays import file_sha256
from pruning_core.demo.tiny_clip import create_tiny_clip
from pruning_core.distill.job import DistilledSet, DistillInputs
from pruning_core.distill.mdw import SyntheticState, correspondence_targets
from pruning_core.export.manifest import DISTILLED, DistilledRecord, Manifest
from pruning_core.export.subset import write_table

MANIFEST_NAME = "distilled.manifest.json"
PAIRS_NAME = "pairs.csv"
ARRAY_FILES = {"images": "images.npy", "texts": "texts.npy", "correspondence": "correspondence_logits.npy",
               "losses": "losses.npy"}
"""The set's own arrays (``SyntheticState`` field -> file): what :func:`read_distilled` reloads."""
JOINT_NAME = "correspondence.npy"


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Normalised (K, 3, 32, 32) pixels back to uint8 (K, 32, 32, 3) RGB (clipped to the displayable range)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(create_tiny_clip(0))
    mean = np.asarray(cfg["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(cfg["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    rgb = np.clip((np.asarray(images) * std + mean) * 255.0, 0, 255).round().astype(np.uint8)
    return rgb.transpose(0, 2, 3, 1)


def nearest_captions(texts: np.ndarray, real_texts: np.ndarray, captions: np.ndarray,
                     k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(captions, cosines)``, each K × k: the real captions nearest each distilled text (distinct captions)."""
    unique, first = np.unique(np.asarray(captions, dtype=str), return_index=True)
    real = torch.nn.functional.normalize(torch.as_tensor(np.asarray(real_texts)[first], dtype=torch.float32), dim=1)
    syn = torch.nn.functional.normalize(torch.as_tensor(np.asarray(texts), dtype=torch.float32), dim=1)
    sims, idx = (syn @ real.t()).topk(min(k, len(unique)), dim=1)
    return unique[idx.numpy()], sims.numpy()


def pairs_table(distilled: DistilledSet, inputs: DistillInputs) -> pd.DataFrame:
    """One row per synthetic pair: its best text, that match's confidence and its text's nearest real captions."""
    state = distilled.state
    joint = correspondence_targets(torch.from_numpy(np.ascontiguousarray(state.correspondence)))
    rows = (joint / joint.sum(dim=1, keepdim=True)).numpy()
    near, cos = nearest_captions(state.texts, inputs.texts.numpy(), inputs.captions)
    frame = pd.DataFrame({"image": [f"images/{i:04d}.png" for i in range(len(rows))],
                          "best_text": rows.argmax(axis=1), "confidence": rows.max(axis=1).round(4),
                          "started_from_row": state.source_index})
    for j in range(near.shape[1]):
        frame[f"nearest_caption_{j + 1}"] = near[:, j]
        frame[f"nearest_cosine_{j + 1}"] = cos[:, j].round(4)
    return frame


def export_distilled(distilled: DistilledSet, inputs: DistillInputs, out: Path, dataset_name: str) -> Manifest:
    """Write the distilled set to ``out`` (see the module docstring) and its manifest; returns the manifest."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    state = distilled.state
    written = []
    for i, img in enumerate(to_uint8(state.images)):
        written.append(f"images/{i:04d}.png")
        Image.fromarray(img).save(out / written[-1])
    for name, file in ARRAY_FILES.items():
        np.save(out / file, np.asarray(getattr(state, name)))
        written.append(file)
    np.save(out / JOINT_NAME, correspondence_targets(torch.from_numpy(np.ascontiguousarray(state.correspondence))).numpy())
    write_table(pairs_table(distilled, inputs), out / PAIRS_NAME)
    written += [JOINT_NAME, PAIRS_NAME]
    meta = distilled.meta
    record = DistilledRecord(
        dataset={"name": dataset_name, "fingerprint": inputs.fingerprint},
        clip={k: v for k, v in meta["params"].items() if k in inputs.identity},
        settings={k: v for k, v in meta["params"].items() if k not in inputs.identity},
        pairs=len(state.images), iterations=int(meta["iterations"]), stopped_by=str(meta["stopped_by"]),
        seconds=float(meta["seconds"]), plan=dict(meta["plan"]), log_step_size=float(state.log_lr),
        cache_key=distilled.key, files={path: file_sha256(out / path) for path in written})
    manifest = Manifest.of_distilled(record)
    manifest.write(out / MANIFEST_NAME)
    return manifest


def read_distilled(path: Path) -> DistilledSet:
    """The distilled set exported to ``path`` (its folder or its manifest), bit for bit as it was exported.

    Every file the manifest lists must match its SHA-256; a missing or changed one is one ``ValueError`` naming it.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    manifest = Manifest.read(manifest_path)
    if manifest.kind != DISTILLED:
        raise ValueError(f"{manifest_path}: the manifest of a selected subset, not of a distilled set")
    record = manifest.distilled
    folder = manifest_path.parent
    for name, digest in record.files.items():
        file = folder / name
        if not file.is_file():
            raise ValueError(f"{file}: missing (the manifest lists it)")
        if file_sha256(file) != digest:
            raise ValueError(f"{file}: its bytes differ from the manifest's SHA-256 (changed since the export)")
    arrays = {name: np.load(folder / file, allow_pickle=False) for name, file in ARRAY_FILES.items()}
    source = pd.read_csv(folder / PAIRS_NAME)["started_from_row"].to_numpy(dtype=np.int64)
    state = SyntheticState(images=arrays["images"], texts=arrays["texts"], correspondence=arrays["correspondence"],
                           log_lr=record.log_step_size, source_index=source, iteration=record.iterations,
                           losses=[float(v) for v in arrays["losses"]])
    meta = {"params": {**record.clip, **record.settings}, "log_lr": record.log_step_size,
            "iterations": record.iterations, "seconds": record.seconds, "plan": record.plan,
            "stopped_by": record.stopped_by}
    return DistilledSet(state=state, meta=meta, key=record.cache_key)
