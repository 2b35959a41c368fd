"""Backbones you can only call: a Python function, or an ONNX file run by ONNX Runtime."""

import numpy as np
import pytest
import torch

from glancemap import PTameExplainer, load_classifier
from glancemap.evaluation import MetricConfig, score_batch
from glancemap.methods import MethodContext, create_method
from glancemap.models import callable_classifier, export_classifier_onnx

from .conftest import TINY_AUX, TINY_BACKBONE
from .test_training import _config


def _numpy_backbone(outputs="logits"):
    """Three classes from the mean of each colour channel, in numpy: nothing for autograd to follow."""

    def fn(x: np.ndarray) -> np.ndarray:
        logits = 8 * x.mean(axis=(2, 3))
        if outputs == "logits":
            return logits
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return callable_classifier(fn, name="rgb", input_size=16, num_classes=3, outputs=outputs, fingerprint="rgb-v1")


def test_a_callable_scores_the_same_as_logits_or_probabilities():
    x = torch.rand(4, 3, 16, 16)
    logits, probs = _numpy_backbone("logits"), _numpy_backbone("probabilities")
    assert torch.allclose(logits(x).softmax(1), probs(x).softmax(1), atol=1e-6)
    assert not logits.differentiable and logits.fingerprint() == "rgb-v1"


def test_metrics_and_output_only_methods_run_on_a_callable(tmp_path):
    bb = _numpy_backbone()
    x = torch.rand(4, 3, 16, 16)
    config = MetricConfig(road_fractions=(0.3, 0.6), deletion_steps=2)
    for name in ("rise", "gaussian", "random"):
        method = create_method(name, MethodContext(bb, options={"rise_masks": 16}))
        records = score_batch(bb, method, x, config)
        assert len(records) == 4 and all(np.isfinite(r["ROAD LeRF-MoRF"]) for r in records)
    for name in ("gradcam", "scorecam", "opticam"):
        with pytest.raises(ValueError, match="black box you can only call"):
            create_method(name, MethodContext(bb))


def test_onnx_backbone_matches_pytorch_and_explainer_maps_run_on_it(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    torch_bb = load_classifier(TINY_BACKBONE, "random")
    path = export_classifier_onnx(torch_bb, tmp_path / "bb.onnx")
    onnx_bb = load_classifier(f"onnx:{path}")
    x = torch.rand(3, 3, *torch_bb.input_size)
    assert (onnx_bb(x) - torch_bb(x)).abs().max() < 1e-4
    assert onnx_bb.input_size == torch_bb.input_size and onnx_bb.class_names == torch_bb.class_names
    # a trained explainer's maps never run the backbone: they work the same over the black box
    explainer = PTameExplainer(onnx_bb, load_classifier(TINY_AUX, "random"))
    t = onnx_bb.predict(x)[0]
    assert torch.equal(t, torch_bb.predict(x)[0])
    assert explainer(x).shape == (3, 1, *torch_bb.input_size)
    with pytest.raises(ValueError, match="do not pass weights"):
        load_classifier(f"onnx:{path}", "random")


def test_training_refuses_a_black_box_backbone_clearly(tmp_path, image_folder):
    from glancemap import register_classifier
    from glancemap.training import train

    register_classifier("numpy_rgb", lambda weights: _numpy_backbone())
    with pytest.raises(ValueError, match="black box you can only call.*gradient-free training is not available"):
        train(_config(tmp_path, image_folder, backbone="numpy_rgb", backbone_weights=None, max_steps=1),
              progress_bar=False)  # fmt: skip
