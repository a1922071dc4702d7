"""The proxy-training settings of the ``dynamics.*`` and ``cleanlab.*`` scores, AdaPruner and Evaluate.

One frozen dataclass whose field defaults are the only place those defaults are written: the CLI's
flags, the Score and Evaluate pages' widgets and the trainers read them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class DynamicsConfig:
    """Proxy training for the ``dynamics.*`` and ``cleanlab.*`` columns (all fields but device key the cache)."""

    arch: str = "resnet9"  # or "mlp" / "linear": a probe on CLIP image embeddings
    epochs: int = 16
    folds: int = 4  # cross-fitting folds for out-of-sample probabilities; 0 skips cleanlab
    crossfit_share: float = 0.6
    """The share of each given class, ranked cleanest by the recording run's noise score, that the cross-fitting
    folds train on (1.0: all of it, classic cross-fitting).  Trained on cleaner labels, the fold models predict
    the true class of a mislabelled sample instead of its noisy label: a second, out-of-sample round of
    iterative cleaning (``dynamics.crossfit``).  0.6 keeps the clean 60 % of 40 %-noise data, the noisiest
    shared manifest (docs/benchmarks.md, "Cleaned cross-fitting")."""
    image_size: int = 32
    width: int = 64
    batch_size: int = 512
    dynunc_window: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """``auto`` = bf16 autocast where the hardware computes bf16 (``devices.resolve_precision``), or ``fp32``."""
    budget_s: Optional[float] = None
    """Wall-clock seconds for the whole dynamics step (loading, probing, decoding, training, cross-fitting):
    training starts no epoch it cannot finish in them.  ``pruning_core.runtime.planner.plan_dynamics``
    picks settings that fit it; None runs as set."""
    max_epochs: Optional[int] = None
    """With a budget, the most epochs the recording run may grow to when its first epoch shows the budget has
    room (set by the planner on a stretched plan without cross-fitting; None: ``epochs`` exactly)."""

    def __post_init__(self) -> None:
        if not 0 < self.crossfit_share <= 1:
            raise ValueError(f"crossfit_share must be in (0, 1], got {self.crossfit_share}")

    def trainer_options(self) -> dict:
        """Keyword arguments of the proxy trainer (``proxy_trainer``, ``train_and_record``, ``out_of_sample_probs``)."""
        return dict(arch=self.arch, epochs=self.epochs, batch_size=self.batch_size, width=self.width, seed=self.seed,
                    device=self.device, precision=self.precision)

    def training_params(self) -> dict:
        params = asdict(self)
        params.pop("device")
        params.pop("dynunc_window")  # derived from the cached records, never retrained for
        params.pop("crossfit_share")  # what the cross-fitting trains on, not how: its step keys it
        return params
