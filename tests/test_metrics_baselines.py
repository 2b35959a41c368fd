import torch
import torch.nn as nn

from glancemap import Classifier
from glancemap.methods import CenteredGaussian, UniformRandom
from glancemap.metrics import confidence_change, keep_top_fraction


def test_keep_top_fraction_keeps_soft_values():
    m = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 15
    kept = keep_top_fraction(m, 0.25)
    assert (kept > 0).sum() == 4
    assert torch.equal(kept.flatten()[-4:], m.flatten()[-4:])
    assert torch.equal(keep_top_fraction(m, 1.0), m)


class _MeanBrightness(nn.Module):
    """Two-class toy: logit of class 0 is 4*mean pixel value (normalization is the identity)."""

    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))
        return torch.stack([4 * s, torch.zeros_like(s)], dim=1)


def test_average_drop_by_hand():
    clf = Classifier(_MeanBrightness(), name="toy", input_size=4, num_classes=2, mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.ones(1, 3, 4, 4)
    maps = torch.zeros(1, 1, 4, 4)
    maps[..., :2, :] = 1.0  # half the pixels at full weight
    out = confidence_change(clf, images, maps, keep=0.5)
    y = torch.sigmoid(torch.tensor(4.0))  # softmax over (4, 0)
    o = torch.sigmoid(torch.tensor(2.0))  # mean brightness halves
    assert torch.allclose(out["drop"], 100 * (y - o) / y)
    assert out["increase"].item() == 0.0
    full = confidence_change(clf, images, torch.ones(1, 1, 4, 4), keep=1.0)
    assert torch.allclose(full["drop"], torch.zeros(1))


def test_baselines_shapes_and_ranges():
    x = torch.rand(2, 3, 10, 12)
    g = CenteredGaussian()(x)
    assert g.shape == (2, 1, 10, 12) and g.max() <= 1 and g.argmax() == g[0, 0].argmax()
    assert g[0, 0, 5, 6] > g[0, 0, 0, 0]
    r1, r2 = UniformRandom(seed=3)(x), UniformRandom(seed=3)(x)
    assert torch.equal(r1, r2) and r1.min() >= 0 and r1.max() <= 1


def test_cam_family_through_grad_cam_package(tiny_backbone):
    from glancemap.methods import GradCamMethod

    x = torch.rand(2, 3, *tiny_backbone.input_size)
    for method in ["gradcam", "gradcam++", "layercam", "eigencam", "scorecam"]:
        maps = GradCamMethod(tiny_backbone, method, batch_size=8)(x, torch.tensor([1, 2]))
        assert maps.shape == (2, 1, *tiny_backbone.input_size), method
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6, method


def test_score_cam_in_image_chunks_gives_the_whole_batch_maps(tiny_backbone, monkeypatch):
    from glancemap.methods import GradCamMethod

    x = torch.rand(5, 3, *tiny_backbone.input_size)
    t = torch.tensor([1, 2, 3, 4, 5])
    method = GradCamMethod(tiny_backbone, "scorecam", batch_size=8)
    sizes = []
    real_call = type(method.cam).__call__

    def spy(cam, input_tensor, targets, **kw):
        sizes.append(len(input_tensor))
        return real_call(cam, input_tensor=input_tensor, targets=targets, **kw)

    monkeypatch.setattr(type(method.cam), "__call__", spy)
    chunked = method(x, t)
    assert sizes == [4, 1]  # IMAGES_PER_CALL bounds the package's memory
    monkeypatch.setitem(GradCamMethod.IMAGES_PER_CALL, "scorecam", None)
    whole = method(x, t)
    assert sizes[2:] == [5] and torch.allclose(chunked, whole, atol=1e-5)


def test_score_and_ablation_cam_print_no_progress_bars(tiny_backbone, capsys):
    import pytorch_grad_cam.score_cam

    from glancemap.methods import GradCamMethod

    x = torch.rand(2, 3, *tiny_backbone.input_size)
    for method in ["scorecam", "ablationcam"]:
        GradCamMethod(tiny_backbone, method, batch_size=8)(x, torch.tensor([1, 2]))
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err
    # the package's own bars come back once our call returns
    list(pytorch_grad_cam.score_cam.tqdm.tqdm(range(3)))
    assert "%|" in capsys.readouterr().err


def test_gradcam_matches_plain_autograd(tiny_backbone):
    """Grad-CAM by hand: ReLU(sum_c mean(dy/dA_c) * A_c), upsampled and min-max normalised."""
    from glancemap.explainer import minmax_normalize, resize_maps
    from glancemap.methods import GradCamMethod
    from glancemap.models import default_target_layer

    # its own generator: a class whose gradient-weighted map is negative everywhere has a constant
    # (all-zero) CAM, which no correlation can compare, so only non-constant cases are checked
    x = torch.rand(1, 3, *tiny_backbone.input_size, generator=torch.Generator().manual_seed(0))
    layer = dict(tiny_backbone.model.named_modules())[default_target_layer(tiny_backbone)]
    method = GradCamMethod(tiny_backbone, "gradcam")
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o))
    with torch.enable_grad():
        logits = tiny_backbone(x.clone().requires_grad_(True))
    handle.remove()
    compared = 0
    for target in range(8):
        (grad,) = torch.autograd.grad(logits[0, target], store["a"], retain_graph=True)
        cam = (grad.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True).relu()
        if cam.max() - cam.min() < 1e-6:
            continue
        expected = minmax_normalize(resize_maps(cam.detach(), x.shape[-2:]))
        ours = method(x, torch.tensor([target]))
        assert torch.corrcoef(torch.stack([ours.flatten(), expected.flatten()]))[0, 1] > 0.99, target
        compared += 1
    assert compared >= 3, "too few classes with a non-constant Grad-CAM to compare"


def test_rise_is_seeded_and_finds_the_bright_half():
    clf = Classifier(_MeanBrightness(), name="toy", input_size=8, num_classes=2, mean=(0, 0, 0), std=(1, 1, 1))
    from glancemap.methods import RISE

    x = torch.zeros(1, 3, 8, 8)
    x[..., :, :4] = 1.0  # only the left half carries evidence for class 0
    a = RISE(clf, n_masks=400, cells=4, batch_size=100, seed=1)(x, torch.tensor([0]))
    b = RISE(clf, n_masks=400, cells=4, batch_size=100, seed=1)(x, torch.tensor([0]))
    assert torch.equal(a, b)
    assert a[..., :, :4].mean() > a[..., :, 4:].mean()


def test_auxiliary_cam_by_hand():
    from glancemap import load_classifier
    from glancemap.methods import AuxiliaryCAM

    torch.manual_seed(0)
    aux = load_classifier("efficientnet_lite0", "random")
    x = torch.rand(1, 3, 224, 224)
    maps = AuxiliaryCAM(aux, aux)(x, torch.tensor([7]))
    feats = aux.model.forward_features((x - 0.5) / 0.5)
    cam = torch.einsum("bchw,c->bhw", feats, aux.model.classifier.weight[7]).relu()
    from glancemap.explainer import minmax_normalize, resize_maps

    expected = minmax_normalize(resize_maps(cam.unsqueeze(1), (224, 224)))
    assert torch.allclose(maps, expected, atol=1e-5)


def test_gradcam_on_vit_uses_token_grid():
    from glancemap import load_classifier
    from glancemap.methods import GradCamMethod

    vit = load_classifier("vit_b_16", "random")
    maps = GradCamMethod(vit, "gradcam")(torch.rand(1, 3, 224, 224), torch.tensor([0]))
    assert maps.shape == (1, 1, 224, 224)


class _ColourEvidence(nn.Module):
    """Two-class toy: class 0's logit is 8*(mean red - mean green), class 1's the opposite.
    Its 'features' layer passes the image through, so the CAM channels are the colour planes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x):
        f = self.features(x)
        d = 8 * (f[:, 0].mean(dim=(1, 2)) - f[:, 1].mean(dim=(1, 2)))
        return torch.stack([d, -d], dim=1)


def test_opticam_keeps_the_evidence_and_drops_the_counter_evidence():
    """The best map keeps the red square (evidence for class 0) and blacks out the green one; for
    class 1 the reverse. One batch, one weight vector per image."""
    from glancemap.methods import OptiCAM

    clf = Classifier(_ColourEvidence(), name="toy", input_size=8, num_classes=2, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.zeros(1, 3, 8, 8)
    x[:, 0, :4, :4] = 1.0  # red square, top left
    x[:, 1, 4:, 4:] = 1.0  # green square, bottom right
    opti = OptiCAM(clf, target_layer="features", steps=100, lr=0.1)
    maps = opti(x.repeat(2, 1, 1, 1), torch.tensor([0, 1]))
    assert maps.shape == (2, 1, 8, 8) and maps.min() >= 0 and maps.max() <= 1
    red, green = (slice(1, 3), slice(1, 3)), (slice(5, 7), slice(5, 7))  # square centres, clear of the bilinear edge
    assert maps[0, 0][red].min() > 0.9 and maps[0, 0][green].max() < 0.25
    assert maps[1, 0][green].min() > 0.9 and maps[1, 0][red].max() < 0.25
    # the uniform start (steps=1 barely moves it) keeps both squares alike: the optimisation did the work
    start = OptiCAM(clf, target_layer="features", steps=1, lr=1e-6)(x, torch.tensor([0]))
    assert (start[0, 0][red].mean() - start[0, 0][green].mean()).abs() < 0.05


def test_opticam_on_a_timm_backbone(tiny_backbone):
    from glancemap.methods import OptiCAM

    x = torch.rand(2, 3, *tiny_backbone.input_size)
    maps = OptiCAM(tiny_backbone, steps=3)(x, torch.tensor([1, 2]))
    assert maps.shape == (2, 1, *tiny_backbone.input_size)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert not any(p.grad is not None for p in tiny_backbone.parameters())  # only the weights u are fitted
