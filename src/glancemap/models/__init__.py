"""Models: the black-box classifiers we explain and the auxiliary feature networks."""

from .auxiliary import FeatureExtractor
from .blackbox import callable_classifier, export_classifier_onnx, onnx_classifier
from .classifier import (
    RANDOM_WEIGHTS,
    Classifier,
    Preprocessing,
    available_classifiers,
    imagenet_class_names,
    load_classifier,
    register_classifier,
)
from .layers import default_layers, default_target_layer

__all__ = [
    "Classifier",
    "callable_classifier",
    "onnx_classifier",
    "export_classifier_onnx",
    "Preprocessing",
    "FeatureExtractor",
    "default_layers",
    "default_target_layer",
    "load_classifier",
    "register_classifier",
    "available_classifiers",
    "imagenet_class_names",
    "RANDOM_WEIGHTS",
]
