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

One departure: ``blurry`` is scored here, from CleanVision's edge statistic taken two steps further.
CleanVision's blurriness is the standard deviation of PIL's ``FIND_EDGES`` image of the grey image
(downscaled to at most 64 px a side), squashed to [0, 1], plus a colour term that calls an image of few
grey levels sharp.  (1) PIL copies the outer 1-pixel ring of its input into that image unfiltered, so 6-12 %
of the "edges" are raw brightness and the score follows how bright the border is: a Gaussian blur of radius
2 was flagged on 26 % of 3,000 CIFAR-10 photos.  :func:`blur_statistics` takes the statistic over the interior.
(2) Edge strength grows with contrast, so a low-contrast sharp image read as blurry (23 % of the demo's
ordinary images) while a blurred flat shape of few grey levels was rescued by the colour term (4 of 20
planted).  :func:`blurry_scores` divides the edge strength by the image's contrast (its grey-level standard
deviation plus :data:`BLUR_CONTRAST_FLOOR`), which is the same for a sharp image at any contrast; the colour
term is dropped.  Of 3,000 CIFAR-10 photos 2.1 % are flagged as they are, 100 % blurred at radius 2; of the
demo's images 3.5 % and 100 % (docs/benchmarks.md, "Blur relative to contrast").

Each flag is ``score < threshold`` with the thresholds of :class:`QualityConfig` passed to
CleanVision explicitly (its defaults, except ``odd_size``: CleanVision's own rule moves between 0.5
and 1.0 with the spread of sizes, which on a dataset of one size flags any image one pixel off, so a
fixed 0.5 = "further from the typical size than half of it" is used; ``blurry``, scored here, flags below
0.5).  The thresholds reach the
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
    "blurry": ("Blurry images", "edge strength of the grey image (Laplacian-like filter, its border ring left out) "
                                "relative to its contrast, squashed to [0, 1]"),
    "low_information": ("Low-information images",
                        "0.1 x the grey-level entropy (capped at 1): a near-constant or almost empty image"),
    "odd_aspect_ratio": ("Odd aspect ratios", "min(width / height, height / width)"),
    "odd_size": ("Odd sizes", "1 - distance of sqrt(width x height) from the dataset's typical size, "
                              "relative to the spread of sizes (interquartile range x 3; the size itself when all match)"),
    "grayscale": ("Grayscale images", "0 when the file stores a single grey channel (PIL mode L), else 1"),
}
"""Issue type -> (finding title, what its score measures); the order is the Overview's."""

SCORED_HERE = frozenset({"blurry"})
"""Issue types PruneScope scores itself (see the module's docstring); CleanVision scores the others."""


@dataclass(frozen=True)
class QualityConfig:
    """Each issue's flag threshold on its score (flagged when the score is below it); the defaults live here."""

    dark: float = 0.32
    light: float = 0.05
    blurry: float = 0.5
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
                for issue, t in self.thresholds().items() if issue not in SCORED_HERE}

    def score_params(self) -> dict[str, dict]:
        """Every parameter the scores depend on: CleanVision's, and ours for ``blurry`` (what the cache key holds)."""
        return {**self.cleanvision_params(),
                "blurry": {"threshold": self.blurry, "contrast_floor": BLUR_CONTRAST_FLOOR, "no_contrast": NO_CONTRAST}}


def column(issue: str) -> str:
    """The score column of an issue type (``image.dark``)."""
    return f"{FAMILY}.{issue}"


def score_infos() -> dict[str, ScoreInfo]:
    return {column(issue): ScoreInfo(column(issue), f"{'PruneScope' if issue in SCORED_HERE else 'CleanVision'} "
                                                    f"{issue.replace('_', ' ')} score: {text} (low = the issue)", "low")
            for issue, (_, text) in ISSUE_TEXT.items()}


BLUR_CONTRAST_FLOOR = 6.0
"""Grey levels added to an image's contrast before it divides the edge strength.  Below a few levels of
contrast an image's edges are mostly its noise; the floor judges such near-constant images by their absolute
edge strength instead.  At 6, 2.4 % of the 50,000 CIFAR-10 training photos are flagged as they are, the share
the ring-free CleanVision score flagged (docs/benchmarks.md, "Blur relative to contrast": on 3,000 of them
floors 2 / 4 / 6 / 8 flag 1.3 / 1.5 / 2.1 / 2.7 %, and 83 / 89 / 92 / 95 % after a blur of radius 1)."""

NO_CONTRAST = 0.5
"""An image whose grey levels vary less than this (a constant image, up to compression noise) has no edges
to lose: it is never called blurry (``low_information`` is its finding)."""


def blur_statistics(image: Image.Image) -> tuple[float, float]:
    """(edge strength, contrast) of one image: what :func:`blurry_scores` reads.

    As CleanVision's ``BlurrinessProperty.calculate``: the grey image at <= 64 px a side and the standard
    deviation of its ``FIND_EDGES`` image, except that the edge image's outer ring, which PIL leaves
    unfiltered, is left out (images under 3 px a side have no interior and keep it all); the contrast is
    the standard deviation of the same grey image's pixels.
    """
    from cleanvision.utils.constants import MAX_RESOLUTION_FOR_BLURRY_DETECTION

    ratio = max(image.width, image.height) / MAX_RESOLUTION_FOR_BLURRY_DETECTION
    if ratio > 1:
        image = image.resize((max(int(image.width // ratio), 1), max(int(image.height // ratio), 1)))
    grey = image.convert("L")
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float64)
    if min(edges.shape) >= 3:
        edges = edges[1:-1, 1:-1]
    return float(edges.std()), float(np.asarray(grey, dtype=np.float64).std())


def blurry_scores(edge_strength: np.ndarray, contrast: np.ndarray, floor: float = BLUR_CONTRAST_FLOOR) -> np.ndarray:
    """``image.blurry``: ``1 - exp(-edges / (contrast + floor))``, 1 where there is no contrast.

    The ratio is how sharp the image's transitions are for the contrast it has; at the default threshold
    0.5 an image is flagged when its edges are weaker than ln 2 = 0.69 of its contrast plus the floor.
    """
    edge_strength, contrast = np.asarray(edge_strength, dtype=float), np.asarray(contrast, dtype=float)
    scores = 1.0 - np.exp(-edge_strength / (contrast + floor))
    return np.where(contrast < NO_CONTRAST, 1.0, scores)


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
    # blurry is scored here (blurry_scores) from the statistics the source gathers while CleanVision reads it
    lab.find_issues(params, n_jobs=1, verbose=False)
    report(progress, STAGE, len(paths), len(paths))
    frame = pd.DataFrame({column(issue): (blurry_scores(source.blur[:, 0], source.blur[:, 1]) if issue == "blurry"
                                          else lab.issues[f"{issue}_score"].to_numpy(dtype=float))
                          for issue in ISSUE_TEXT})
    settings = {"library": f"cleanvision {__version__}", "thresholds": config.thresholds(),
                "params": config.score_params()}
    return frame, score_infos(), settings


def flagged(frame: pd.DataFrame, issue: str, threshold: float) -> np.ndarray:
    """Rows whose ``image.<issue>`` score is below ``threshold`` (NaN, an unreadable image, is never flagged)."""
    return frame[column(issue)].to_numpy(dtype=float) < threshold
