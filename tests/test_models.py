import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from glancemap import Classifier, load_classifier
from glancemap.models import FeatureExtractor, default_layers


def test_timm_and_torchvision_random_weights_take_unit_range_images():
    for name in ["test_efficientnet", "torchvision:resnet18"]:
        clf = load_classifier(name, "random")
        x = torch.rand(2, 3, *clf.input_size)
        assert clf(x).shape == (2, clf.num_classes)
        assert not any(p.requires_grad for p in clf.parameters())
        assert not clf.training


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "vit_b_16"])
def test_paper_backbones_by_name_with_random_weights(name):
    clf = load_classifier(name, "random")
    assert clf.source == "torchvision"
    assert clf.num_classes == 1000 and clf.input_size == (224, 224)
    assert clf.class_names[1].startswith("goldfish")


def test_normalization_happens_inside():
    clf = Classifier(nn.Flatten(), name="id", input_size=2, num_classes=12, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    x = torch.ones(1, 3, 2, 2)
    out = clf(x).view(3, 4)
    assert torch.allclose(out[0], torch.full((4,), 2.0))
    assert torch.allclose(out[1], torch.full((4,), 1.0))
    assert torch.allclose(out[2], torch.full((4,), 0.5))


def test_wrong_shape_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        tiny_backbone(torch.rand(3, 32, 32))


def test_local_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    a = load_classifier("test_efficientnet", "random")
    save_file(a.model.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(a.model.state_dict(), tmp_path / "w.pth")
    x = torch.rand(1, 3, *a.input_size)
    for f in ["w.safetensors", "w.pth"]:
        b = load_classifier("test_efficientnet", tmp_path / f)
        assert torch.allclose(a(x), b(x))


class Evil:
    """Any non-tensor object: a pickle that would run code on load."""


def test_pickled_objects_are_never_loaded(tmp_path):
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_classifier("test_efficientnet", tmp_path / "evil.pth")


def test_mismatched_weights_file_is_refused(tmp_path):
    save_file(load_classifier("test_resnet", "random").model.state_dict(), str(tmp_path / "r.safetensors"))
    with pytest.raises(ValueError, match="weights do not fit|shape mismatch"):
        load_classifier("test_efficientnet", tmp_path / "r.safetensors")


def test_unknown_name_is_explained():
    with pytest.raises(ValueError, match="unknown classifier"):
        load_classifier("no_such_net_xyz", "random")


def test_feature_extractor_reads_named_layers(tiny_aux):
    layers = default_layers(tiny_aux)
    fx = FeatureExtractor(tiny_aux, layers)
    feats = fx(torch.rand(2, 3, 50, 70))  # resized to the aux's own size first
    assert len(feats) == len(layers)
    assert [tuple(f.shape[1:]) for f in feats] == fx.feature_shapes()
    with pytest.raises(ValueError, match="no module"):
        FeatureExtractor(tiny_aux, ["nope"])


def test_lite_default_layers_include_cam_layer():
    clf = load_classifier("efficientnet_lite0", "random")
    fx = FeatureExtractor(clf, default_layers(clf))
    assert [s[0] for s in fx.feature_shapes()] == [24, 40, 112, 320, 1280]
    w, _ = fx.cam_weights()
    assert w.shape == (1000, 1280)


def test_registered_custom_model_loads_by_name():
    from glancemap import register_classifier

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    register_classifier("my_net", lambda weights: Classifier(net, name="x", input_size=32, num_classes=5))
    clf = load_classifier("my_net")
    assert clf.name == "my_net" and clf.source == "registered" and clf.num_classes == 5
    assert clf(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_extractors_sharing_one_auxiliary_leave_no_hooks(tiny_aux):
    layers = default_layers(tiny_aux)
    a, b = FeatureExtractor(tiny_aux, layers), FeatureExtractor(tiny_aux, layers[-1:])
    x = torch.rand(1, 3, 40, 40)
    fa, fb = a(x), b(x)
    assert torch.equal(fa[-1], fb[0])
    assert all(not m._forward_hooks for m in tiny_aux.modules())


# Lite0 with its real (offline) weights: random ones saturate ReLU6 units, where rounding flips gradients
@pytest.mark.parametrize("name,weights", [("efficientnet_lite0", None), ("torchvision:resnet18", "random")])
def test_loaded_classifiers_run_channels_last_and_agree_with_contiguous(name, weights):
    torch.manual_seed(0)
    clf = load_classifier(name, weights)
    assert clf.channels_last
    conv = next(m for m in clf.modules() if isinstance(m, nn.Conv2d))
    seen = []
    handle = conv.register_forward_pre_hook(
        lambda _m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    # a fixed input, not the global RNG's next draw: on about half of random inputs this random
    # ResNet has a ReLU or max-pool decision within rounding of its threshold, and the input
    # gradient then takes another path (logits still agree to 4e-7); seed 1 has none
    x = torch.rand(2, 3, *clf.input_size, generator=torch.Generator().manual_seed(1))

    def logits_and_input_grad():
        xi = x.clone().requires_grad_(True)
        out = clf(xi)
        out[:, 3].sum().backward()  # a trained perturbation backpropagates to the image
        return out.detach(), xi.grad

    fast = logits_and_input_grad()
    clf.channels_last = False
    plain = logits_and_input_grad()
    handle.remove()
    assert seen == [True, False]
    for a, b in zip(fast, plain):  # logits, then input gradients: the same up to float rounding
        assert (a - b).norm() <= 1e-4 * b.norm()
    assert all(p.is_contiguous() for p in clf.parameters())  # weights save as they are (safetensors)


class _ViewsItsInput(nn.Module):
    """A wrapped module that .view()s its input, which only a contiguous tensor allows."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(x.shape[0], -1))


def test_wrapped_modules_get_their_input_as_given():
    clf = Classifier(_ViewsItsInput(), name="x", input_size=8, num_classes=5)
    assert not clf.channels_last
    x = torch.rand(2, 3, 8, 8)
    assert clf(x).shape == (2, 5)
    clf.channels_last = True  # opting in is the wrapper's choice: this module cannot take it
    with pytest.raises(RuntimeError, match="view"):
        clf(x)
