"""Training P-TAME heads: the loop, checkpoints, distributed runs."""

from .trainer import (
    PRESETS,
    TrainConfig,
    TrainingDivergedError,
    build_explainer,
    imagenet_sample_split,
    load_checkpoint,
    save_checkpoint,
    train,
    training_recipe,
    training_step,
)

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
    "imagenet_sample_split",
]
