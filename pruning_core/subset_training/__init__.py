"""Compare pruning choices by training on what they keep.

* :func:`train_on_subset` - the proxy trained on a static subset, scored on held-out data;
* :func:`train_with_dynamic_pruning` - a new subset every epoch (difficulty x CLIP consistency);
* :class:`AdaPruner` - a keep mask learned jointly with the model;
* :func:`~pruning_core.subset_training.evaluate.evaluate_pruning` - strategies x keep ratios -> accuracy curves,
  every run cached.  Not re-exported here: the grid scores through ``scoring.pipeline``, which uses
  :func:`adapruner_score_table` from this package, so importing it here would close a circle
  (docs/ARCHITECTURE.md, floors).
"""

from .adapruner import AdaPruner
from .dynamic import train_with_dynamic_pruning
from .mask_scores import adapruner_score_table
from .runs import TrainingRun, accuracy, train_on_subset

__all__ = [
    "AdaPruner",
    "TrainingRun",
    "accuracy",
    "adapruner_score_table",
    "train_on_subset",
    "train_with_dynamic_pruning",
]
