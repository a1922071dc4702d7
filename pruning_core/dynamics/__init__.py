"""Training-dynamics scoring: proxy training with per-epoch records, dynamics scores,
out-of-sample probabilities by cross-fitting, and cleanlab label issues.

Typical use (images decoded by ``pruning_core.data.images.load_image_array``)::

    config = DynamicsConfig()
    rec = train_and_record(images_u8, label_ids, **config.trainer_options())
    frame, infos = dynamics_scores(rec, dynunc_window=config.dynunc_window)
    probs = out_of_sample_probs(images_u8, label_ids, folds=config.folds, fold_cache=step.partial_dir(store),
                                **config.trainer_options())
    cl_frame, cl_infos = label_issue_scores(label_ids, probs, dataset.classes)
"""

from .crossfit import fold_assignment, out_of_sample_probs
from .label_issues import LabelIssues, find_label_issues, label_issue_scores
from .models import ARCHS, build_model
from .scores import dynamic_uncertainty, dynamics_scores, forgetting_events
from .trainer import TrainingRecord, label_stats, train_and_record

__all__ = [
    "ARCHS",
    "LabelIssues",
    "TrainingRecord",
    "build_model",
    "dynamic_uncertainty",
    "dynamics_scores",
    "find_label_issues",
    "fold_assignment",
    "forgetting_events",
    "label_issue_scores",
    "label_stats",
    "out_of_sample_probs",
    "train_and_record",
]
