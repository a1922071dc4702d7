"""Compare pruning choices by training on what they keep.

* :func:`train_on_subset` - the proxy trained on a static subset, scored on held-out data;
* :func:`train_with_dynamic_pruning` - a new subset every epoch (difficulty x CLIP consistency);
* :class:`AdaPruner` - a keep mask learned jointly with the model;
* :func:`evaluate_pruning` - strategies x keep ratios -> accuracy curves, every run cached.
"""

from .adapruner import AdaPruner
from .dynamic import train_with_dynamic_pruning
from .evaluate import EvalConfig, GridPlan, best_configuration, evaluate_pruning, plan_grid, summarise
from .mask_scores import adapruner_score_table
from .runs import TrainingRun, accuracy, train_on_subset

__all__ = [
    "AdaPruner",
    "EvalConfig",
    "TrainingRun",
    "accuracy",
    "adapruner_score_table",
    "GridPlan",
    "best_configuration",
    "evaluate_pruning",
    "plan_grid",
    "summarise",
    "train_on_subset",
    "train_with_dynamic_pruning",
]
