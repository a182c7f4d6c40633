"""Pure PyTorch training: validated config, datasets, models, the trainer loop and checkpoints.

This package knows nothing of Flask, RQ or SQL; ``api`` calls into it.
"""

from training.config import ConfigError, TrainingConfig
from training.trainer import Progress, TrainResult, train

__all__ = ["ConfigError", "Progress", "TrainResult", "TrainingConfig", "train"]
