"""A distilled set out of the cache: viewable pixels, nearest real captions, and a folder with its manifest.

The exported folder (``prunescope distill --out DIR``)::

    DIR/images/NNNN.png     the K synthetic images (32 px, de-normalised to RGB)
    DIR/pairs.csv           one row per synthetic pair: image, its best text by the learned correspondence and
                            that text's confidence, the three nearest real captions of its own text (cosine)
    DIR/texts.npy           K × d text vectors (the scoring CLIP's text-tower output space)
    DIR/correspondence.npy  K × K joint soft correspondence P (rows: images, columns: texts)
    DIR/distill.json        the manifest: kind, dataset, CLIP identity, settings, budget, plan, iterations, step size,
                            cache key, the real rows the set started from
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cache.store import atomic_write_bytes
from pruning_core.demo.tiny_clip import create_tiny_clip
from pruning_core.distill.job import DistilledSet, DistillInputs
from pruning_core.distill.mdw import correspondence_targets
from pruning_core.export.subset import write_table

MANIFEST_KIND = "prunescope-distilled-set"
MANIFEST_NAME = "distill.json"
PAIRS_NAME = "pairs.csv"


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


def export_distilled(distilled: DistilledSet, inputs: DistillInputs, out: Path, dataset_name: str) -> Path:
    """Write the distilled set to ``out`` (see the module docstring); returns the manifest's path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(distilled.state.images)):
        Image.fromarray(img).save(out / "images" / f"{i:04d}.png")
    write_table(pairs_table(distilled, inputs), out / PAIRS_NAME)
    np.save(out / "texts.npy", np.asarray(distilled.state.texts))
    joint = correspondence_targets(torch.from_numpy(np.ascontiguousarray(distilled.state.correspondence)))
    np.save(out / "correspondence.npy", joint.numpy())
    meta = distilled.meta
    manifest = {
        "kind": MANIFEST_KIND,
        "dataset": {"name": dataset_name, "fingerprint": meta["fingerprint"]},
        "clip": {k: v for k, v in meta["params"].items() if k not in _setting_names(meta)},
        "settings": {k: meta["params"][k] for k in _setting_names(meta) if k in meta["params"]},
        "pairs": len(distilled.state.images),
        "iterations": meta["iterations"], "stopped_by": meta["stopped_by"], "seconds": meta["seconds"],
        "plan": meta["plan"], "step_size": math.exp(meta["log_lr"]),
        "cache_key": distilled.key,
        "files": {"images": "images/", "pairs": PAIRS_NAME, "texts": "texts.npy",
                  "correspondence": "correspondence.npy"},
    }
    path = out / MANIFEST_NAME
    atomic_write_bytes(path, json.dumps(manifest, indent=1, default=str).encode())
    return path


def _setting_names(meta: dict) -> list[str]:
    from pruning_core.distill.mdw import MDWConfig

    return [*MDWConfig().as_dict(), "budget_s", "start"]
