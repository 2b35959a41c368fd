"""The P-TAME explainer: attention head, trained perturbation and loss."""

from .explainer import (
    DEFAULT_EXPLAINER_DIR,
    ExplainerMismatchError,
    PTameExplainer,
    load_explainer,
    read_explainer_config,
)
from .head import AttentionHead, FeatureBlock, FusionHead, SharedReadoutHead
from .loss import LossWeights, PTameLoss, area_loss, total_variation
from ..maps import minmax_normalize, resize_maps
from .perturbation import perturb

__all__ = [
    "PTameExplainer",
    "load_explainer",
    "read_explainer_config",
    "ExplainerMismatchError",
    "DEFAULT_EXPLAINER_DIR",
    "AttentionHead",
    "FusionHead",
    "SharedReadoutHead",
    "FeatureBlock",
    "LossWeights",
    "PTameLoss",
    "area_loss",
    "total_variation",
    "perturb",
    "resize_maps",
    "minmax_normalize",
]
