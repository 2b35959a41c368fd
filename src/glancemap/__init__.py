"""glancemap: explain any image classifier in one forward pass (P-TAME)."""

from .explainer import (
    ExplainerMismatchError,
    LossWeights,
    PTameExplainer,
    PTameLoss,
    load_explainer,
    perturb,
)
from .methods import METHODS, Explainer, MethodContext, create_method, register_method
from .models import Classifier, load_classifier, register_classifier
from .version import __version__

__all__ = [
    "__version__",
    "Classifier",
    "load_classifier",
    "register_classifier",
    "PTameExplainer",
    "Explainer",
    "METHODS",
    "MethodContext",
    "create_method",
    "register_method",
    "load_explainer",
    "ExplainerMismatchError",
    "LossWeights",
    "PTameLoss",
    "perturb",
]
