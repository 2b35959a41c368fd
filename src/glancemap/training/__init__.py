"""Training P-TAME heads: the run's config, the loop, checkpoints, distributed runs."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, TrainingDivergedError
from .init import build_explainer
from .trainer import train, training_recipe, training_step

__all__ = [
    "TrainConfig",
    "PRESETS",
    "train",
    "training_step",
    "training_recipe",
    "build_explainer",
    "TrainingDivergedError",
    "save_checkpoint",
    "load_checkpoint",
]
