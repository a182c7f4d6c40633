"""Pure PyTorch training: the built-in tasks' params, datasets, models and the MLP's trainer loop.

This package knows nothing of Flask, RQ or SQL; its tasks (``training.tasks``) are written on the public SDK
(``trainq``) like any user's.
"""

from builtin_tasks.config import TrainingConfig
from builtin_tasks.trainer import Progress, TrainResult, train

__all__ = ["Progress", "TrainResult", "TrainingConfig", "train"]
