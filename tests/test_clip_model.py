import numpy as np
import pytest
import torch

import pruning_core.embeddings.clip_model as clip_model
from pruning_core.embeddings.clip_model import WeightsUnavailable, load_clip, resolve_weights, source_identity
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME


def test_none_means_random_init():
    source = resolve_weights(TINY_CLIP_NAME, "none")
    assert source.kind == "random"
    assert source_identity(source) == {"model": TINY_CLIP_NAME, "weights": "random:seed0"}


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailable, match="checkpoint file not found: .*missing.safetensors"):
        resolve_weights("ViT-B-32", str(tmp_path / "missing.safetensors"))


def test_unknown_model_suggests_close_names():
    with pytest.raises(WeightsUnavailable, match="Unknown open_clip model 'ViT-B-33'.*ViT-B-32"):
        resolve_weights("ViT-B-33", "none")


def test_unknown_tag_lists_known_tags():
    with pytest.raises(WeightsUnavailable, match="no pretrained tag 'laion9000'.*laion2b_s34b_b79k"):
        resolve_weights("ViT-B-32", "laion9000")


def test_offline_tag_fails_fast_without_trying_to_download(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(clip_model, "_cached_hub_file", lambda hub: None)
    monkeypatch.setattr(clip_model, "_reachable", lambda url, timeout=3.0: False)

    def no_download(*args, **kwargs):
        raise AssertionError("must not start open_clip's retrying download")

    import open_clip.pretrained

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    with pytest.raises(WeightsUnavailable, match="not in the local hub cache.*--clip-pretrained"):
        resolve_weights("ViT-B-32", "laion2b_s34b_b79k")


def test_cached_hub_weights_are_used_as_a_local_file(monkeypatch, tmp_path):
    ckpt = tmp_path / "open_clip_model.safetensors"
    ckpt.write_bytes(b"weights")
    monkeypatch.setattr(clip_model, "_cached_hub_file", lambda hub: ckpt)
    source = resolve_weights("ViT-B-32", "laion2b_s34b_b79k")
    assert source.kind == "file" and source.path == ckpt and source.tag == "laion2b_s34b_b79k"
    assert source.pretrained_cfg["interpolation"] == "bicubic"  # the tag's preprocessing is kept


def test_tiny_random_encoder_embeds_text_normalised_and_deterministically():
    a = load_clip(TINY_CLIP_NAME, "none", device="cpu")
    b = load_clip(TINY_CLIP_NAME, "none", device="cpu")
    texts = ["a photo of a star.", "a photo of a ring.", "a red square"]
    ea, eb = a.encode_text(texts, batch_size=2), b.encode_text(texts)
    assert ea.shape == (3, a.embed_dim) and ea.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ea, eb, rtol=1e-5, atol=1e-6)  # random init is seeded: cache keys stay valid
    images = torch.randn(2, 3, 32, 32)
    img = a.encode_image_batch(images)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(2))


def test_local_checkpoint_loads_through_open_clip_and_is_hashed(tmp_path):
    encoder = load_clip(TINY_CLIP_NAME, "none", device="cpu")
    ckpt = tmp_path / "tiny.pt"
    torch.save(encoder.model.state_dict(), ckpt)
    loaded = load_clip(TINY_CLIP_NAME, str(ckpt), device="cpu")
    assert loaded.identity["weights"].startswith("sha256:")
    np.testing.assert_allclose(loaded.encode_text(["x y"]), encoder.encode_text(["x y"]), atol=1e-6)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match=f"Could not load CLIP {TINY_CLIP_NAME} from .*broken.pt"):
        load_clip(TINY_CLIP_NAME, str(ckpt), device="cpu")


def test_weights_load_at_the_chosen_precision_and_key_it():
    fp32 = load_clip(TINY_CLIP_NAME, "none", device="cpu")
    bf16 = load_clip(TINY_CLIP_NAME, "none", device="cpu", precision="bf16")
    assert fp32.precision == "fp32" and "precision" not in fp32.identity  # CPU default: fp32, keys as before
    assert bf16.identity == {**fp32.identity, "precision": "bf16"}
    dtypes = {p.dtype for p in bf16.model.parameters()}
    assert torch.bfloat16 in dtypes  # weights stored in bf16 (LayerNorms stay fp32)
    size = bf16.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(4, 3, size, size)
    a, b = fp32.encode_image_batch(images), bf16.encode_image_batch(images)
    assert b.dtype == torch.float32 and torch.allclose((a * b).sum(1), torch.ones(4), atol=1e-2)
