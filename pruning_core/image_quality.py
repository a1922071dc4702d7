"""Image-quality scores through CleanVision: dark, light, blurry, low information, odd aspect ratio, odd size, grayscale.

CleanVision (``cleanvision`` on PyPI, by the cleanlab team) computes one score per issue type in
[0, 1] where LOW marks the issue, and flags an image when its score is below the issue's threshold.
We hand it the dataset's images in memory through its ``torchvision_dataset`` entry (any object with
``len`` and ``[i] -> (PIL image, ...)``), so the images are decoded by our reader once, with our
progress and cancel between images, and never copied to a folder it could read itself.

Why not the decoded-images cache the dynamics proxy uses: that array is resized to a square, which
erases exactly what ``odd_size`` and ``odd_aspect_ratio`` measure, and converted to RGB, which erases
what ``grayscale`` checks (CleanVision's grayscale is an image stored in PIL mode ``L``; an RGB file
whose channels happen to be equal is not flagged).  So the images are read at their own size and
mode; 8-bit and 16-bit greys stay grey, every other mode goes through ``images.to_rgb``'s policy.

Each flag is ``score < threshold`` with the thresholds of :class:`QualityConfig` passed to
CleanVision explicitly (its defaults, except ``odd_size``: CleanVision's own rule moves between 0.5
and 1.0 with the spread of sizes, which on a dataset of one size flags any image one pixel off, so a
fixed 0.5 = "further from the typical size than half of it" is used).  The thresholds reach the
score table's settings (``settings["image"]``), where the Overview's findings read them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from pruning_core.data.images import ImageError, ImageSource, load_native
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report
from pruning_core.scoring.score_info import ScoreInfo

FAMILY = "image"
STAGE = "image quality"
PROGRESS_EVERY = 256
"""Images between two progress reports (and cancel checks are made at every image)."""

ISSUE_TEXT = {
    "dark": ("Dark images", "99th percentile of pixel brightness (0 = black): a dark or underexposed image"),
    "light": ("Light images", "1 - 5th percentile of pixel brightness: an overexposed or washed-out image"),
    "blurry": ("Blurry images", "edge strength of the grey image (Laplacian-like filter), squashed to [0, 1]"),
    "low_information": ("Low-information images",
                        "0.1 x the grey-level entropy (capped at 1): a near-constant or almost empty image"),
    "odd_aspect_ratio": ("Odd aspect ratios", "min(width / height, height / width)"),
    "odd_size": ("Odd sizes", "1 - distance of sqrt(width x height) from the dataset's typical size, "
                              "relative to the spread of sizes (interquartile range x 3; the size itself when all match)"),
    "grayscale": ("Grayscale images", "0 when the file stores a single grey channel (PIL mode L), else 1"),
}
"""Issue type -> (finding title, what its score measures); the order is the Overview's."""


@dataclass(frozen=True)
class QualityConfig:
    """Each issue's flag threshold on its score (flagged when the score is below it); the defaults live here."""

    dark: float = 0.32
    light: float = 0.05
    blurry: float = 0.29
    low_information: float = 0.3
    odd_aspect_ratio: float = 0.35
    odd_size: float = 0.5
    grayscale: float = 0.5

    def thresholds(self) -> dict[str, float]:
        return asdict(self)

    def cleanvision_params(self) -> dict[str, dict]:
        """The ``issue_types`` argument of ``Imagelab.find_issues``: CleanVision's defaults, our thresholds."""
        from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager

        params = ImagePropertyIssueManager().get_default_params()
        # grayscale's flag is CleanVision's own (mode L); its 0/1 score is below our 0.5 exactly then
        return {issue: {**params[issue], **({} if issue == "grayscale" else {"threshold": t})}
                for issue, t in self.thresholds().items()}


def column(issue: str) -> str:
    """The score column of an issue type (``image.dark``)."""
    return f"{FAMILY}.{issue}"


def score_infos() -> dict[str, ScoreInfo]:
    return {column(issue): ScoreInfo(column(issue), f"CleanVision {issue.replace('_', ' ')} score: {text} "
                                                    "(low = the issue)", "low")
            for issue, (_, text) in ISSUE_TEXT.items()}


class _InMemoryImages:
    """What CleanVision's ``torchvision_dataset`` entry reads: ``[i] -> (image,)``, decoded on demand.

    Every read reports progress (each ``PROGRESS_EVERY`` images) and checks ``cancel`` (raises
    ``Cancelled`` out of CleanVision's loop).  A file that does not decode is an error naming it:
    CleanVision's size score has no place for a missing image (one NaN size fails its quartiles), and
    a validated dataset (``Dataset``) holds only files that decoded when it was loaded.
    """

    def __init__(self, paths: Sequence[ImageSource], progress: Optional[ProgressCallback],
                 cancel: Optional[CancelToken]) -> None:
        self.paths, self.progress, self.cancel = list(paths), progress, cancel

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image]:
        check(self.cancel)
        if i % PROGRESS_EVERY == 0:
            report(self.progress, STAGE, i, len(self.paths))
        try:
            return (load_native(self.paths[i]),)
        except ImageError as exc:
            raise ValueError(f"{exc.path}: {exc.reason} (it decoded when the dataset was loaded: load it again)"
                             ) from None


def quality_scores(
    paths: Sequence[ImageSource],
    config: QualityConfig = QualityConfig(),
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> tuple[pd.DataFrame, dict[str, ScoreInfo], dict]:
    """The ``image.*`` score columns (rows in ``paths`` order), their infos and the settings that made them.

    One process (CleanVision runs a torchvision-style source on one core; its pool would copy the
    source to every worker and lose our cancel).  ``verbose=False`` keeps CleanVision quiet except for
    its transient tqdm bar on stderr; the streams are not redirected, since the app's server threads share them.
    """
    from cleanvision import Imagelab, __version__

    if not len(paths):
        raise ValueError("image quality needs at least one image")
    source = _InMemoryImages(paths, progress, cancel)
    params = config.cleanvision_params()
    lab = Imagelab(torchvision_dataset=source, verbose=False)
    lab.find_issues(params, n_jobs=1, verbose=False)
    report(progress, STAGE, len(paths), len(paths))
    frame = pd.DataFrame({column(issue): lab.issues[f"{issue}_score"].to_numpy(dtype=float)
                          for issue in ISSUE_TEXT})
    settings = {"library": f"cleanvision {__version__}", "thresholds": config.thresholds(),
                "params": params}
    return frame, score_infos(), settings


def flagged(frame: pd.DataFrame, issue: str, threshold: float) -> np.ndarray:
    """Rows whose ``image.<issue>`` score is below ``threshold`` (NaN, an unreadable image, is never flagged)."""
    return frame[column(issue)].to_numpy(dtype=float) < threshold
