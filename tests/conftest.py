"""Shared pytest fixtures (keep generic: several test modules use them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10",
                      Path("/work/shared/data/cifar10"))
CIFAR_SHARED = Path(os.environ.get("PRUNESCOPE_CIFAR_SHARED")
                    or next((p for p in _SHARED_CANDIDATES if p.is_dir()), _SHARED_CANDIDATES[-1]))
CIFAR_UNPACKED = Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar"))


def _absent(reason: str) -> None:
    """Skip where the shared data is not given; under CI (``CI=true``, where it is) a missing input fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test run gets its own result store, so tests never read or pollute a user's cache.

    ``$PRUNESCOPE_TEST_CACHE`` keeps one across runs (the demo is then built only once).
    """
    env = os.environ.get("PRUNESCOPE_TEST_CACHE")
    path = Path(env) if env else tmp_path_factory.mktemp("prunescope-cache")
    previous = os.environ.get("PRUNESCOPE_CACHE")
    os.environ["PRUNESCOPE_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("PRUNESCOPE_CACHE", None)
    else:
        os.environ["PRUNESCOPE_CACHE"] = previous


@pytest.fixture(scope="session", autouse=True)
def workspace_includes_tmp() -> None:
    """Test datasets live in the temporary folder (pytest's, the CIFAR copy): add it to the app's workspace roots."""
    import tempfile

    from pruning_core.runtime.safety import ROOTS_ENV

    base = tempfile.gettempdir()
    previous = os.environ.get(ROOTS_ENV)
    os.environ[ROOTS_ENV] = os.pathsep.join([str(base), str(Path.home()), os.getcwd()])
    yield
    if previous is None:
        os.environ.pop(ROOTS_ENV, None)
    else:
        os.environ[ROOTS_ENV] = previous


@pytest.fixture
def one_thread():
    """Training tests run on one torch thread: bitwise-reproducible on CPU, and faster on 2 shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """Unpacked real CIFAR-10 (``<dir>/train/<class>/NNNN.jpg``), extracted from the shared tarball on first use.

    ``PRUNESCOPE_CIFAR_DIR`` is where it is unpacked (default ``/tmp/cifar``); the tarball and the
    manifests are read from ``PRUNESCOPE_CIFAR_SHARED`` (default: ``shared/`` beside the checkout).
    """
    tarball = CIFAR_SHARED / "cifar10-jpeg.tar.gz"
    if not (CIFAR_UNPACKED / "train").is_dir() and tarball.is_file():
        import subprocess

        CIFAR_UNPACKED.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xzf", str(tarball), "-C", str(CIFAR_UNPACKED)], check=True)
    if not (CIFAR_SHARED / "train_sym20.csv").is_file() or not (CIFAR_UNPACKED / "train").is_dir():
        _absent(f"real CIFAR-10 not available (need {CIFAR_SHARED} and {CIFAR_UNPACKED}/train)")
    return CIFAR_UNPACKED


@pytest.fixture(scope="session")
def cifar_manifests() -> Path:
    """Folder with the CIFAR-10 manifests (train_clean/sym20/sym40/asym40.csv); skips if absent."""
    if not (CIFAR_SHARED / "train_sym20.csv").is_file():
        _absent(f"CIFAR-10 manifests not available at {CIFAR_SHARED}")
    return CIFAR_SHARED


@pytest.fixture(scope="session")
def demo_assets(isolated_cache):
    """The offline demo (noisy shape dataset + trained tiny CLIP), built once per session.

    Built where the app looks for it (the test run's result store), so the AppTest and browser
    tests find it instead of building it again.
    """
    from pruning_core.demo.dataset import ensure_demo

    return ensure_demo()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One real Label Studio server for the whole session (tests marked ``labelstudio`` share it).

    Skipped where Label Studio is not installed; under ``CI=true`` that fails (tests/labelstudio_support.py).
    """
    from labelstudio_support import running_label_studio

    with running_label_studio(tmp_path_factory.mktemp("label-studio"),
                              files_root=tmp_path_factory.getbasetemp()) as server:
        yield server
