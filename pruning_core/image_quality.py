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

One departure, in ``blurry``: CleanVision's edge statistic is the standard deviation of PIL's
``FIND_EDGES`` image of the grey image (downscaled to at most 64 px a side first), and PIL copies the
outer 1-pixel ring of its input into that image unfiltered, so 6-12 % of the "edges" are raw brightness
and the score follows how bright the border is.  On CIFAR-10 photos that hides blur: a Gaussian blur of
radius 2 was flagged on 26 % of 3,000 images.  :func:`blur_statistics` takes the same statistic over
the interior only; CleanVision's own scoring (its normalising factor and colour term) and threshold then
apply unchanged, and a blur of radius 2 is flagged on 99.9 % (docs/benchmarks.md, "Blur without the
edge image's border").

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
from PIL import Image, ImageFilter

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
    "blurry": ("Blurry images", "edge strength of the grey image (Laplacian-like filter, its border ring left out), squashed to [0, 1]"),
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


def blur_statistics(image: Image.Image) -> tuple[float, float]:
    """CleanVision's two raw blur statistics of one image, the edge one over the edge image's interior.

    As ``BlurrinessProperty.calculate``: the grey image at <= 64 px a side, the standard deviation of its
    ``FIND_EDGES`` image (``blurriness``) and of its histogram (``blurriness_grayscale_std``), except that
    the edge image's outer ring, which PIL leaves unfiltered, is left out.  Images under 3 px a side have
    no interior and keep the whole edge image, as CleanVision does.
    """
    from cleanvision.issue_managers.image_property import calc_std_grayscale
    from cleanvision.utils.constants import MAX_RESOLUTION_FOR_BLURRY_DETECTION

    ratio = max(image.width, image.height) / MAX_RESOLUTION_FOR_BLURRY_DETECTION
    if ratio > 1:
        image = image.resize((max(int(image.width // ratio), 1), max(int(image.height // ratio), 1)))
    grey = image.convert("L")
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float64)
    if min(edges.shape) >= 3:
        edges = edges[1:-1, 1:-1]
    return float(edges.std()), float(calc_std_grayscale(grey))


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
        self.blur = np.full((len(self.paths), 2), np.nan)  # :func:`blur_statistics`, filled as images are read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image]:
        check(self.cancel)
        if i % PROGRESS_EVERY == 0:
            report(self.progress, STAGE, i, len(self.paths))
        try:
            image = load_native(self.paths[i])
        except ImageError as exc:
            raise ValueError(f"{exc.path}: {exc.reason} (it decoded when the dataset was loaded: load it again)"
                             ) from None
        self.blur[i] = blur_statistics(image)
        return (image,)


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
    # blurry is scored here from the statistics the source gathers while CleanVision reads it, not twice
    lab.find_issues({issue: p for issue, p in params.items() if issue != "blurry"}, n_jobs=1, verbose=False)
    report(progress, STAGE, len(paths), len(paths))
    frame = pd.DataFrame({column(issue): (_ring_free_blurry_scores(source, params[issue]) if issue == "blurry"
                                          else lab.issues[f"{issue}_score"].to_numpy(dtype=float))
                          for issue in ISSUE_TEXT})
    settings = {"library": f"cleanvision {__version__}", "thresholds": config.thresholds(),
                "params": params}
    return frame, score_infos(), settings


def _ring_free_blurry_scores(source: _InMemoryImages, params: dict) -> np.ndarray:
    """``image.blurry`` through CleanVision's own ``BlurrinessProperty.get_scores`` on :func:`blur_statistics`."""
    from cleanvision.issue_managers.image_property import BlurrinessProperty

    prop = BlurrinessProperty()
    raw = pd.DataFrame(source.blur, columns=prop.score_columns)
    options = {k: v for k, v in params.items() if k != "threshold"}
    return prop.get_scores(raw, "blurry", **options)["blurry_score"].to_numpy(dtype=float)


def flagged(frame: pd.DataFrame, issue: str, threshold: float) -> np.ndarray:
    """Rows whose ``image.<issue>`` score is below ``threshold`` (NaN, an unreadable image, is never flagged)."""
    return frame[column(issue)].to_numpy(dtype=float) < threshold
