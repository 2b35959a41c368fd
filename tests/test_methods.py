"""One interface for every method, a registry that lists them, one shared target check."""

import pytest
import torch

from glancemap.evaluation import plan_methods
from glancemap.explainer import PTameExplainer
from glancemap.maps import minmax_normalize, resize_maps
from glancemap.methods import (
    METHODS,
    RISE,
    AuxiliaryCAM,
    Explainer,
    GradCamMethod,
    MethodContext,
    create_method,
    method_label,
    method_names,
    register_method,
)
from glancemap.models import Classifier, FeatureExtractor, default_layers


def test_every_registered_method_is_an_explainer_with_a_label(tiny_backbone, tiny_explainer):
    ctx = MethodContext(tiny_backbone, tiny_explainer, options={"rise_masks": 4, "opticam_steps": 1})
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    assert list(METHODS)[:2] == ["ptame", "ptame-single"] and "gradcam" in METHODS and "random" in METHODS
    for name, spec in METHODS.items():
        method = create_method(name, ctx)
        assert isinstance(method, Explainer), name
        assert spec.label and method_label(name) == spec.label
        if name in ("scorecam", "ablationcam"):
            continue  # hundreds of masked passes: covered by test_faithfulness_metrics
        maps = method.explain(x, [3, 7])
        assert maps.shape == (2, 1, *x.shape[-2:]), name
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6, name


def test_targets_are_checked_the_same_way_everywhere(tiny_backbone, tiny_aux, tiny_explainer):
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    for method in (
        tiny_explainer,
        GradCamMethod(tiny_backbone),
        RISE(tiny_backbone, n_masks=4),
        AuxiliaryCAM(tiny_backbone, tiny_aux),
    ):
        with pytest.raises(ValueError, match="one target per image"):
            method(x, [1, 2, 3])
        with pytest.raises(ValueError, match=r"targets must be in \[0, 1000\)"):
            method(x, [0, 1000])
        with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
            method(x[:, :1], [0, 1])
        assert torch.equal(method.targets(x, None), tiny_backbone.predict(x)[0])  # None: the backbone's top-1
        assert method.targets(x, 5).tolist() == [5, 5]  # one class for every image


def test_a_registered_method_is_listed_and_built_by_name(tiny_backbone):
    class Ones(Explainer):
        def explain(self, images, targets=None):
            return torch.ones(images.shape[0], 1, *images.shape[-2:])

    try:
        register_method("ones", "All ones", lambda ctx: Ones(), summary="every pixel relevant")
        assert "ones" in method_names("all") and method_label("ones") == "All ones"
        assert create_method("ones", MethodContext(tiny_backbone))(torch.rand(1, 3, 8, 8)).sum() == 64
    finally:
        METHODS.pop("ones", None)
    with pytest.raises(ValueError, match="unknown method"):
        method_names("gradcam,nope")
    with pytest.raises(ValueError, match="needs an explainer"):
        create_method("ptame", MethodContext(tiny_backbone))
    with pytest.raises(ValueError, match="needs an explainer or an auxiliary"):
        create_method("auxcam", MethodContext(tiny_backbone))


def _three_class_backbone():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 3))
    return Classifier(net, name="three_way", input_size=64, class_names=["crack", "dent", "scratch"])


def test_the_auxiliary_cam_reads_a_distilled_readout_for_classes_the_auxiliary_lacks(tiny_aux):
    backbone = _three_class_backbone()
    x, t = torch.rand(2, 3, 64, 64), torch.tensor([2, 0])
    # no readout for these classes: refused with the reason, when the method is planned
    with pytest.raises(ValueError, match="distilled for them"):
        plan_methods(["gaussian", "auxcam"], MethodContext(backbone, auxiliary=tiny_aux))
    torch.manual_seed(4)
    channels = FeatureExtractor(tiny_aux, default_layers(tiny_aux)).feature_shapes()[-1][0]
    readout = torch.randn(3, channels)
    explainer = PTameExplainer(backbone, tiny_aux, head="shared", readout=readout)
    ctx = MethodContext(backbone, explainer)
    method = create_method("auxcam", ctx)
    assert METHODS["auxcam"].identity(ctx) == {"auxiliary": tiny_aux.name, "readout": "distilled"}
    (feat,) = FeatureExtractor(tiny_aux, [explainer.layers[-1]])(x)
    cam = torch.einsum("bchw,bc->bhw", feat, readout[t]).relu().unsqueeze(1)
    assert torch.allclose(method(x, t), minmax_normalize(resize_maps(cam, (64, 64))), atol=1e-6)


def test_the_auxiliary_cam_of_an_auxiliary_with_the_backbones_classes_uses_its_own_classifier(
    tiny_backbone, tiny_aux, tiny_explainer
):
    ctx = MethodContext(tiny_backbone, tiny_explainer)  # a head over the auxiliary's own classifier
    assert METHODS["auxcam"].identity(ctx) == {"auxiliary": tiny_aux.name}
    x = torch.rand(1, 3, *tiny_explainer.input_size)
    assert torch.equal(create_method("auxcam", ctx)(x, [7]), AuxiliaryCAM(tiny_backbone, tiny_aux)(x, [7]))
