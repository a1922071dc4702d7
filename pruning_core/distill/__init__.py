"""Distillation of image–caption data (MDW, Dang et al. arXiv 2506.01586) and its comparison with pruning.

``student`` (the contrastive model every set trains) and ``mdw`` (trajectory matching with learned
correspondences) are steps (floor 2); ``job`` (cached, planned, resumable runs on a dataset), ``compare``
(prune or distil, by retrieval) and ``export`` join them with the pipeline (floor 3): import those directly.
"""

from pruning_core.distill.mdw import MDWConfig, TrajectoryMatcher, alignment_weights
from pruning_core.distill.student import PairSet, Student, retrieval_recall, train_student

__all__ = ["MDWConfig", "PairSet", "Student", "TrajectoryMatcher", "alignment_weights", "retrieval_recall",
           "train_student"]
