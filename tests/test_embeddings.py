import numpy as np
import pytest
from PIL import Image

from pruning_core.embeddings.clip_model import load_clip
from pruning_core.embeddings.encode import embed_images
from pruning_core.runtime.progress import CancelToken, Cancelled
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME


@pytest.fixture(scope="module")
def encoder():
    return load_clip(TINY_CLIP_NAME, "none", device="cpu")


@pytest.fixture
def image_paths(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    return paths[:5] + [tmp_path / "broken.png"] + paths[5:]


def test_embeddings_are_normalised_and_independent_of_batching(encoder, image_paths):
    a, ok = embed_images(image_paths, encoder, batch_size=4, num_workers=0)
    b, _ = embed_images(image_paths, encoder, batch_size=12, chunk_size=5, num_workers=0)
    assert a.shape == (12, encoder.embed_dim)
    assert ok.tolist() == [True] * 5 + [False] + [True] * 6
    assert np.isnan(a[5]).all()  # the corrupt file is recorded, not a crash
    np.testing.assert_allclose(np.linalg.norm(a[ok], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a[ok], b[ok], atol=1e-5)


def test_cancelled_job_resumes_from_finished_chunks(encoder, image_paths, tmp_path):
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    cancel = CancelToken()
    seen = []

    def stop_after_first_chunk(p):
        seen.append(p.done)
        if p.done >= 4:
            cancel.cancel()

    with pytest.raises(Cancelled):
        embed_images(image_paths, encoder, chunk_dir=chunks, chunk_size=4, batch_size=4, num_workers=0,
                     progress=stop_after_first_chunk, cancel=cancel)
    assert sorted(p.name for p in chunks.glob("emb-*.npy")) == ["emb-00000.npy"]

    batches = []
    original = encoder.encode_image_batch

    def counting(images):
        batches.append(len(images))
        return original(images)

    encoder.encode_image_batch = counting
    try:
        resumed, ok = embed_images(image_paths, encoder, chunk_dir=chunks, chunk_size=4, batch_size=4, num_workers=0)
    finally:
        del encoder.encode_image_batch
    assert sum(batches) == 8  # only the two unfinished chunks were embedded again
    full, _ = embed_images(image_paths, encoder, batch_size=4, num_workers=0)
    np.testing.assert_allclose(resumed[ok], full[ok], atol=1e-5)


def test_loader_settings_come_from_the_policy_and_fit_dev_shm(monkeypatch, encoder, image_paths):
    """With Docker's 64 MB /dev/shm a batch of 4096 images cannot be handed over: decode in this process."""
    from pruning_core.runtime import devices
    from pruning_core.embeddings import encode as embeddings
    made = []
    real_loader = embeddings.DataLoader

    def spy(*args, **kwargs):
        made.append((kwargs["num_workers"], kwargs["prefetch_factor"]))
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(embeddings, "DataLoader", spy)
    monkeypatch.setattr(devices, "affinity_cpus", lambda: 8)
    for shm, expected in ((64 * 2**20, (0, None)), (2**40, (2, 4))):  # a CPU device: at most two decoders
        monkeypatch.setattr(devices, "shm_free_bytes", lambda path="/dev/shm", shm=shm: shm)
        list(embeddings.local_batches(image_paths[:2], encoder, batch_size=4096, num_workers=None))
        assert made[-1] == expected
