"""Load open_clip weights the normal way, or fail at once with a message that says what to do.

Three sources are accepted for ``pretrained``: an open_clip tag (downloaded once into the
Hugging Face hub cache on a machine with internet), a local checkpoint file, or ``none``
for a randomly initialised model (tests, timing).  open_clip's own downloader retries for
about a minute when the hub is unreachable; we look in the hub cache first and probe the
host with a short timeout, so an offline user gets a clear error in seconds instead.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

import numpy as np
import torch

from pruning_core.runtime.devices import DTYPES, resolve_device, resolve_precision
from pruning_core.demo.tiny_clip import register_tiny_clip

_RANDOM = {"", "none", "random", "null"}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class WeightsUnavailable(ValueError):
    """The requested CLIP weights cannot be loaded here; the message says why and what to do."""


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of one model come from, resolved before anything is loaded."""

    kind: str  # "random" | "file" | "tag"
    model_name: str
    tag: Optional[str] = None
    path: Optional[Path] = None
    pretrained_cfg: Optional[dict] = None

    @property
    def label(self) -> str:
        return {"random": "random init (seed 0)", "file": str(self.path), "tag": str(self.tag)}[self.kind]


def _known_model(model_name: str) -> None:
    import open_clip

    register_tiny_clip()
    if model_name.startswith(("hf-hub:", "local-dir:")) or model_name in open_clip.list_models():
        return
    import difflib

    close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise WeightsUnavailable(f"Unknown open_clip model {model_name!r}.{hint} (see open_clip.list_models())")


def _cached_hub_file(hf_hub: str) -> Optional[Path]:
    """The checkpoint of an hf-hub pretrained entry if it is already in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = os.path.split(hf_hub)  # "org/repo/" (default file names) or "org/repo/file"
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(model_name: str, pretrained: Optional[str]) -> WeightsSource:
    """Decide where weights come from, raising :class:`WeightsUnavailable` before any slow step."""
    import open_clip

    _known_model(model_name)
    value = (pretrained or "").strip()
    if value.lower() in _RANDOM:
        return WeightsSource("random", model_name)
    path = Path(value).expanduser()
    if path.is_file():
        return WeightsSource("file", model_name, path=path.resolve())
    if os.sep in value or value.endswith(_CHECKPOINT_SUFFIXES):
        raise WeightsUnavailable(f"CLIP checkpoint file not found: {path}")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if value not in tags:
        known = ", ".join(tags) if tags else "none (use a local checkpoint path or 'none')"
        raise WeightsUnavailable(f"{model_name!r} has no pretrained tag {value!r}. Known tags: {known}")
    cfg = open_clip.get_pretrained_cfg(model_name, value)
    hub = cfg.get("hf_hub", "")
    cached = _cached_hub_file(hub) if hub else None
    if cached is not None:
        return WeightsSource("file", model_name, tag=value, path=cached, pretrained_cfg=cfg)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if hub else cfg.get("url", "")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _reachable(endpoint):
        raise WeightsUnavailable(
            f"Cannot load CLIP weights {model_name}/{value}: they are not in the local hub cache and "
            f"{urlparse(endpoint).hostname or 'the model hub'} cannot be reached from this machine. "
            "Either run once on a machine with internet (the weights are cached under ~/.cache/huggingface), "
            "or download the checkpoint file and pass its path as --clip-pretrained /path/to/model.safetensors, "
            "or use --clip-pretrained none for a randomly initialised model (timing only; scores are meaningless)."
        )
    return WeightsSource("tag", model_name, tag=value, pretrained_cfg=cfg)


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def clip_precision(device: str | torch.device = "auto", precision: str = "auto") -> str:
    """The precision CLIP's weights are loaded at: the device policy's on accelerators (bf16 on cc >= 8, fp16
    on older GPUs - inference needs no loss scaling), fp32 on CPUs unless asked (bf16 embeddings on a CPU are
    not yet measured against fp32 ones)."""
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if precision == "auto" and dev.type == "cpu":
        return "fp32"
    return resolve_precision(dev, precision)


def source_identity(source: WeightsSource, precision: str = "fp32") -> dict:
    """What makes an encoder's outputs what they are: part of every embedding cache key.

    Known without loading the model, so a cache hit never pays for loading it.  A precision other
    than fp32 is part of it (fp32 is left out so that the keys of fp32 embeddings made before
    precisions existed stay valid).
    """
    if source.kind == "file":
        stat = source.path.stat()
        weights = "sha256:" + _file_sha256(str(source.path), stat.st_size, stat.st_mtime_ns)
    elif source.kind == "tag":
        weights = f"tag:{source.tag}"
    else:
        weights = "random:seed0"
    identity = {"model": source.model_name, "weights": weights}
    return identity if precision == "fp32" else {**identity, "precision": precision}


class ClipEncoder:
    """A loaded open_clip model with its preprocessing and tokenizer, producing L2-normalised embeddings."""

    def __init__(self, source: WeightsSource, device: str = "auto", precision: str = "auto") -> None:
        import open_clip

        self.source = source
        self.device = resolve_device(device)
        self.precision = clip_precision(self.device, precision)
        self.dtype = DTYPES[self.precision]
        kwargs: dict = {}
        cfg = source.pretrained_cfg or {}
        for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if key in cfg:
                kwargs[arg] = cfg[key]
        if cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
        pretrained = {"random": None, "file": str(source.path), "tag": source.tag}[source.kind]
        torch.manual_seed(0)  # a random-init model must be the same model every time (cache keys rely on it)
        try:
            # weights loaded at the precision (LayerNorms stay fp32): no per-batch casts, half the memory
            model, _, preprocess = open_clip.create_model_and_transforms(
                source.model_name, pretrained=pretrained, device=self.device, precision=self.precision, **kwargs
            )
        except Exception as exc:  # open_clip raises many types; the user needs one clear message
            raise WeightsUnavailable(f"Could not load CLIP {source.model_name} from {source.label}: {exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(source.model_name)

    @property
    def identity(self) -> dict:
        return source_identity(self.source, self.precision)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else int(
            self.encode_text(["x"]).shape[1]
        )

    @torch.inference_mode()
    def encode_image_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B,3,H,W) -> L2-normalised float32 embeddings on the device."""
        features = self.model.encode_image(images.to(self.device, dtype=self.dtype, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        """Texts -> L2-normalised float32 embeddings (n, D) as a numpy array."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            features = self.model.encode_text(tokens)
            out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        if not out:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return torch.cat(out).numpy()


def load_clip(model_name: str, pretrained: Optional[str], device: str = "auto", precision: str = "auto") -> ClipEncoder:
    """Resolve and load weights in one call: the entry point the CLI and the app use."""
    return ClipEncoder(resolve_weights(model_name, pretrained), device=device, precision=precision)
