"""Models: the black-box classifiers we explain and the auxiliary feature networks."""

from .auxiliary import FeatureExtractor
from .blackbox import callable_classifier, export_classifier_onnx, onnx_classifier
from .classifier import RANDOM_WEIGHTS, Classifier, Preprocessing, imagenet_class_names
from .layers import default_layers, default_target_layer
from .loading import available_classifiers, load_classifier, register_classifier

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
