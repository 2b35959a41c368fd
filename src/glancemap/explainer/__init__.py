"""The P-TAME explainer: attention head, trained perturbation, loss, and explainer folders on disk."""

from ..maps import minmax_normalize, resize_maps
from .explainer import DEFAULT_EXPLAINER_DIR, PTameExplainer
from .head import AttentionHead, FeatureBlock, FusionHead, SharedReadoutHead
from .loss import LossWeights, PTameLoss, area_loss, total_variation
from .networks import ExplainerMismatchError, network_from_config
from .perturbation import perturb
from .storage import explainer_dir, load_explainer, read_explainer_config, ship_explainer, shipped_explainers

__all__ = [
    "PTameExplainer",
    "load_explainer",
    "read_explainer_config",
    "network_from_config",
    "explainer_dir",
    "ship_explainer",
    "shipped_explainers",
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
