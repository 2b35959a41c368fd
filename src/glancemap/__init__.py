"""glancemap: explain any image classifier in one forward pass (P-TAME)."""

__version__ = "0.1.0"

from .explainer import (  # noqa: E402
    ExplainerMismatchError,
    LossWeights,
    PTameExplainer,
    PTameLoss,
    load_explainer,
    perturb,
)
from .models import Classifier, load_classifier, register_classifier  # noqa: E402

__all__ = [
    "__version__",
    "Classifier",
    "load_classifier",
    "register_classifier",
    "PTameExplainer",
    "load_explainer",
    "ExplainerMismatchError",
    "LossWeights",
    "PTameLoss",
    "perturb",
]
