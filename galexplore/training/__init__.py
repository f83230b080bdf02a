"""Training of the CAEs, the environment VAE and the CNN regressors, in the foreground
(`train`, `train_from_cli`) or in a background process (`TrainingJob`, `JobManager`)."""

from galexplore.training.jobs import JobManager, TrainingJob
from galexplore.training.loops import TrainConfig, train, train_from_cli
from galexplore.training.samplers import draw_epoch, kappa_balanced_weights, split_by_galaxy

__all__ = [
    "JobManager",
    "TrainConfig",
    "TrainingJob",
    "draw_epoch",
    "kappa_balanced_weights",
    "split_by_galaxy",
    "train",
    "train_from_cli",
]
