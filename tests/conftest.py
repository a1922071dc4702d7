"""Shared pytest fixtures (keep generic: several test modules use them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CIFAR_SHARED = Path(os.environ.get("PRUNESCOPE_CIFAR_SHARED", "/work/shared/data/cifar10"))
CIFAR_UNPACKED = Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar"))


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """Unpacked real CIFAR-10 (``<dir>/train/<class>/NNNN.jpg``); skips when it is absent.

    Point ``PRUNESCOPE_CIFAR_DIR`` at an unpacked copy (default ``/tmp/cifar``); the
    manifests are read from ``PRUNESCOPE_CIFAR_SHARED`` (default ``/work/shared/data/cifar10``).
    """
    if not (CIFAR_SHARED / "train_sym20.csv").is_file() or not (CIFAR_UNPACKED / "train").is_dir():
        pytest.skip(f"real CIFAR-10 not available (need {CIFAR_SHARED} and {CIFAR_UNPACKED}/train)")
    return CIFAR_UNPACKED


@pytest.fixture(scope="session")
def cifar_manifests() -> Path:
    """Folder with the CIFAR-10 manifests (train_clean/sym20/sym40/asym40.csv); skips if absent."""
    if not (CIFAR_SHARED / "train_sym20.csv").is_file():
        pytest.skip(f"CIFAR-10 manifests not available at {CIFAR_SHARED}")
    return CIFAR_SHARED


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """The offline demo (noisy shape dataset + trained tiny CLIP), built once per session.

    Builds into a session tmp dir (about a minute on 2 CPU cores), or reuses/builds in
    ``$PRUNESCOPE_TEST_DEMO_DIR`` when set, so CI can build it once for every job.
    """
    from pruning_core.demo import ensure_demo

    env = os.environ.get("PRUNESCOPE_TEST_DEMO_DIR")
    directory = Path(env) if env else tmp_path_factory.mktemp("demo") / "demo"
    return ensure_demo(directory)
