"""Where the benchmarks find real CIFAR-10: the shared tarball, unpacked once on first use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DATA = Path(os.environ.get("PRUNESCOPE_CIFAR_SHARED", "/work/shared/data/cifar10"))


def unpack(root: Path) -> Path:
    """``root`` with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, extracting the tarball if needed."""
    if not (root / "train").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xzf", str(DATA / "cifar10-jpeg.tar.gz"), "-C", str(root)], check=True)
    return root
