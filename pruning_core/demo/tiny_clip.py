"""The built-in tiny open_clip architecture and its trainer, for the offline demo.

No pretrained CLIP weights can be fetched offline, yet the demo should show CLIP scores
that mean something.  So the project registers a tiny architecture with open_clip's own
config registry (open_clip's ``ModifiedResNet`` image tower at width 8 on 32 px images, a
2-layer text tower of width 64, the standard open_clip BPE tokenizer; 0.45M parameters besides
the 3.2M-entry token embedding), trains it on generated image–caption pairs, and saves a
checkpoint that the app later loads through exactly the path it uses for real weights::

    open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=str(checkpoint))

Training therefore normalises images with the mean/std that open_clip attaches to the
model (its ``preprocess_cfg``), so the returned val transform feeds the trained model the
same tensors it was trained on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pruning_core.runtime.planner import format_seconds
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report

TINY_CLIP_NAME = "prunescope-tiny"
"""The open_clip model name of the built-in tiny architecture (after :func:`register_tiny_clip`)."""

TINY_CLIP_IMAGE_SIZE = 32

TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": TINY_CLIP_IMAGE_SIZE,
        # A list of stage depths makes open_clip build its ModifiedResNet (conv stem, four
        # bottleneck stages, attention pooling).  Convolutions learn shape from a few thousand
        # steps; the tiny ViTs tried before (2 layers, 4 or 8 px patches) learned colour but
        # barely shape (zero-shot accuracy 0.14-0.48, label-noise AUROC <= 0.87 on the demo).
        "layers": [1, 1, 1, 1],
        "width": 8,
        "head_width": 16,
    },
    "text_cfg": {
        # 77 tokens and the full BPE vocabulary keep the standard open_clip tokenizer
        # (and plain ``open_clip.tokenize``) valid for this model.
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 4,
        "layers": 2,
    },
}
"""The architecture, in open_clip's model-config JSON format."""

TRAINING_STAGE = "training the demo's tiny CLIP (first use only)"

_register_lock = threading.Lock()


def register_tiny_clip() -> str:
    """Make ``TINY_CLIP_NAME`` known to open_clip; idempotent and cheap after the first call.

    Uses the public ``open_clip.add_model_config`` route, which only accepts a path, so the
    JSON is written to a private temporary directory first.  open_clip keeps the parsed
    config in its registry (a later rescan never drops entries), so the file is removed
    again right away: nothing is left on disk and no package data is needed.
    """
    import open_clip

    with _register_lock:
        if open_clip.get_model_config(TINY_CLIP_NAME) == TINY_CLIP_CONFIG:
            return TINY_CLIP_NAME
        with tempfile.TemporaryDirectory(prefix="prunescope-clip-cfg-") as tmp:
            path = Path(tmp) / f"{TINY_CLIP_NAME}.json"
            path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
            open_clip.add_model_config(path)
        if open_clip.get_model_config(TINY_CLIP_NAME) != TINY_CLIP_CONFIG:  # pragma: no cover
            raise RuntimeError(f"open_clip did not register the {TINY_CLIP_NAME!r} model config")
    return TINY_CLIP_NAME


def create_tiny_clip(seed: Optional[int] = None) -> torch.nn.Module:
    """A randomly initialised tiny CLIP built by open_clip itself (CPU, fp32)."""
    import open_clip

    register_tiny_clip()
    if seed is not None:
        torch.manual_seed(seed)
    with _quiet_random_init_warning():  # random initialisation is the point here, not a failure to load weights
        return open_clip.create_model(TINY_CLIP_NAME, pretrained=None, device="cpu")


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning for the tiny CLIP only."""
    def keep(record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("No pretrained weights loaded") and TINY_CLIP_NAME in record.getMessage())

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def preprocess_uint8(model: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    """Turn uint8 (N, 32, 32, 3) RGB arrays into the normalised tensors open_clip's val transform makes.

    For images already at the model's input size, open_clip's val transform (resize the
    shortest side to 32, centre crop 32, ``ToTensor``, ``Normalize(mean, std)``) leaves the
    pixels untouched before normalising, so doing it vectorised here gives the same tensors
    (checked in ``tests/test_demo.py``) at a fraction of the cost of a PIL round trip.
    """
    import open_clip

    images = np.asarray(images)
    size = TINY_CLIP_IMAGE_SIZE
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"expected uint8 images of shape (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: gains, biases, embeddings and ``logit_scale`` stay undecayed (as open_clip's trainer)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
                or "embedding" in name or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised features with the model's learned temperature.

    ``positives[i, j]`` says whether text ``j`` of the batch truly describes image ``i``
    (the diagonal always does).  A class prompt ("a photo of a star.") or a partial
    description ("a red star") drawn for one image also describes every other star or red
    star in the batch; counting those as negatives, as plain CLIP does, would punish the
    model for exactly the shape/colour matching it should learn.  Each direction therefore
    spreads its target uniformly over the true positives; with only the diagonal this is
    exactly CLIP's loss.
    """
    logits = logit_scale * image_features @ text_features.t()
    pos = positives.float()
    loss_i = torch.sum(-(pos / pos.sum(dim=1, keepdim=True)) * F.log_softmax(logits, dim=1), dim=1).mean()
    pos_t = pos.t()
    loss_t = torch.sum(-(pos_t / pos_t.sum(dim=1, keepdim=True)) * F.log_softmax(logits.t(), dim=1), dim=1).mean()
    return 0.5 * (loss_i + loss_t)


INSTANCE_NOISE = 6
"""Pixel noise (±, uint8 levels) of the second view in :func:`instance_loss`: what the demo's near-duplicates get."""
INSTANCE_SCALE = 10.0
"""Logit scale (1 / temperature) of :func:`instance_loss`.  A softer scale keeps pushing all
negatives apart: on the demo, 10 left 45 non-duplicates above cosine 0.95, 20 left 373, 50 left 1,076."""


def instance_loss(model: torch.nn.Module, x: torch.Tensor, features: torch.Tensor, pixel_scale: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """InfoNCE between each image and a lightly noised copy of itself, the batch's other images as negatives.

    Image–text training alone maps every small red star on a striped background to
    nearly one point, so cosine near-duplicate detection flags most of a dataset.  This
    term (SimCLR with pixel noise as the only augmentation) keeps different images apart
    while a copy with a little noise stays close, which is what near-duplicates are.
    """
    noise = torch.randint(-INSTANCE_NOISE, INSTANCE_NOISE + 1, x.shape, generator=generator).float()
    view = F.normalize(model.encode_image(x + noise * pixel_scale), dim=-1)
    logits = INSTANCE_SCALE * features @ view.t()
    target = torch.arange(len(x))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def _compact_vocabulary(
    embedding: torch.nn.Embedding, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Embedding]:
    """``(used ids, tokens renumbered into them, an embedding of just those rows)`` for training.

    The training texts use a few dozen of the 49,408 BPE tokens, yet a full embedding makes
    every step build a dense 3.2M-entry gradient and run AdamW over it: over half the step
    time.  Rows never looked up get zero gradients, and AdamW (no decay on embeddings) leaves
    them exactly where they are, so training only the used rows and writing them back gives
    the same model.  Id 0 (padding) is always kept and the ids stay sorted, so padding is
    still 0 and the end-of-text token is still each row's largest id (where the text pools).
    """
    used, compact = torch.unique(torch.cat([tokens.new_zeros(1), tokens.reshape(-1)]), return_inverse=True)
    small = torch.nn.Embedding.from_pretrained(embedding.weight.detach()[used].clone(), freeze=False)
    return used, compact[1:].reshape(tokens.shape), small


def encode_text_truncated(model: torch.nn.Module, text: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(text)`` computed on the first L tokens only, L = the longest text in the batch.

    The text tower is causal and pools at the end-of-text token, so positions after the
    longest text's EOT cannot influence any pooled feature: cutting them off gives the
    same features (checked in the tests) for about a fifth of the cost at 77 tokens.
    Training uses this; inference uses open_clip's own ``encode_text``.
    """
    length = int((text != 0).sum(dim=1).max())
    text = text[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    if getattr(model, "text_pool_type", "argmax") != "argmax":  # pragma: no cover - our config pools at EOT
        return model.encode_text(text)
    x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Module) else x @ proj


def train_tiny_clip(
    images: np.ndarray,
    captions: Sequence[str] | Sequence[Sequence[str]],
    *,
    epochs: int = 12,
    batch_size: int = 256,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup_fraction: float = 0.05,
    instance_weight: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> torch.nn.Module:
    """Train the tiny CLIP from scratch on image–caption pairs; returns the model in eval mode.

    ``captions[i]`` is one string, or a list of alternative captions for image ``i`` of
    which one is drawn per epoch (a cheap text augmentation: full descriptions, short
    class prompts, partial descriptions); a drawn text counts as a positive for every image
    of the batch that lists it (:func:`contrastive_loss`).  ``instance_weight > 0`` adds
    :func:`instance_loss` (one more image pass per step) so distinct images stay apart.
    AdamW with warm-up and cosine decay; the temperature is the model's own ``logit_scale``,
    clamped at 100 as in open_clip.
    Deterministic for a given seed on a given machine (CPU, fixed thread count).
    Progress is reported per batch, with the time left (on a busy machine this takes minutes: a bar that
    moves says it is working); ``cancel`` is checked between epochs.
    """
    import open_clip

    n = len(images)
    if n != len(captions):
        raise ValueError(f"{n} images but {len(captions)} captions")
    if n < 2:
        raise ValueError("need at least two image-caption pairs for a contrastive loss")
    options: list[list[str]] = [[c] if isinstance(c, str) else list(c) for c in captions]

    model = create_tiny_clip(seed)
    x_all = preprocess_uint8(model, images)
    pixel_scale = 1.0 / (255.0 * torch.tensor(open_clip.get_model_preprocess_cfg(model)["std"]).view(1, 3, 1, 1))

    # Tokenise every distinct text once; samples refer to rows of this table.
    vocab = sorted({t for opts in options for t in opts})
    text_index = {t: i for i, t in enumerate(vocab)}
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    tokens = tokenizer(vocab)
    opt_ids = [np.array([text_index[t] for t in opts], dtype=np.int64) for opts in options]
    # (n, max options) table of each image's valid texts, padded with -1, to find a batch's positives.
    valid = torch.full((n, max(len(ids) for ids in opt_ids)), -1, dtype=torch.int64)
    for i, ids in enumerate(opt_ids):
        valid[i, :len(ids)] = torch.from_numpy(ids)
    full_embedding = model.token_embedding
    used_tokens, tokens, model.token_embedding = _compact_vocabulary(full_embedding, tokens)

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size  # drop the ragged last batch: tiny batches make a weak contrastive signal
    total_steps = max(1, epochs * steps_per_epoch)
    warmup = max(1, int(warmup_fraction * total_steps))
    max_log_scale = math.log(100.0)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))

    model.train()
    report(progress, TRAINING_STAGE, 0, total_steps,
           "the demo has no downloadable CLIP, so PruneScope trains its own tiny one once and caches it")
    step = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        check(cancel)
        perm = torch.randperm(n, generator=gen)
        chosen = np.array([ids[rng.integers(len(ids))] for ids in opt_ids], dtype=np.int64)
        chosen_t = torch.from_numpy(chosen)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            text_ids = chosen_t[idx]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            image_features = F.normalize(model.encode_image(x_all[idx]), dim=-1)
            # Class prompts repeat within a batch: encode each distinct text once (same gradients).
            uniq, inverse = torch.unique(text_ids, return_inverse=True)
            text_features = F.normalize(encode_text_truncated(model, tokens[uniq]), dim=-1)[inverse]
            logit_scale = model.logit_scale.exp()
            positives = (valid[idx][:, :, None] == text_ids[None, None, :]).any(dim=1)
            loss = contrastive_loss(image_features, text_features, logit_scale, positives)
            if instance_weight > 0:
                loss = loss + instance_weight * instance_loss(model, x_all[idx], image_features, pixel_scale, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_log_scale)
            running += loss.item()
            step += 1
            left = (time.perf_counter() - started) / step * (total_steps - step)
            when = "done" if step == total_steps else f"about {format_seconds(left)} left"
            report(progress, TRAINING_STAGE, step, total_steps, f"epoch {epoch + 1}/{epochs}, loss {running / (b + 1):.3f}, {when}")
    with torch.no_grad():
        full_embedding.weight[used_tokens] = model.token_embedding.weight
    model.token_embedding = full_embedding
    model.eval()
    return model


def save_checkpoint(model: torch.nn.Module, path: Path | str) -> Path:
    """Save ``model``'s weights so ``create_model_and_transforms(TINY_CLIP_NAME, pretrained=path)`` loads them.

    ``.safetensors`` (the default suffix, no pickle) or ``.pt``/``.pth``/``.bin`` (a plain
    ``state_dict`` for ``torch.load(weights_only=True)``).  Written to a temporary file in
    the same directory and renamed, so a reader never sees half a checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt", "model": TINY_CLIP_NAME})
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_tiny_clip(path: Path | str, device: str = "cpu"):
    """``(model, val_preprocess, tokenizer)`` through open_clip's public loading path (what the app does)."""
    import open_clip

    register_tiny_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=str(path), device=device)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(TINY_CLIP_NAME)
