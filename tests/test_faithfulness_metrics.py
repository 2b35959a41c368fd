"""ROAD, deletion/insertion and pass counting on toy models whose answers follow by hand,
and agreement with the grad-cam package's own metrics when both are configured alike."""

import functools

import numpy as np
import pytest
import torch
import torch.nn as nn

from glancemap import Classifier
from glancemap.metrics import (
    PassCounter,
    confidence_change,
    deletion_insertion,
    linear_inpaint,
    relevance_order,
    road,
    telea_inpaint,
    trapezoid_auc,
)


class _BrightSpot(nn.Module):
    """Class 0 iff some pixel is brighter than 0.75, else class 1."""

    def forward(self, x):
        peak = x.flatten(1).max(dim=1).values
        return torch.stack([20 * (peak - 0.75), torch.zeros_like(peak)], dim=1)


class _MeanBrightness(nn.Module):
    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))
        return torch.stack([4 * s, torch.zeros_like(s)], dim=1)


def _sensitive_net(side=16, classes=5):
    """Random conv net scaled so its softmax moves a lot with the input."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, classes)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8)
    return Classifier(net.eval(), name="toy", input_size=side, num_classes=classes, mean=(0.5,) * 3, std=(0.25,) * 3)


def _toy(module, side):
    return Classifier(module, name="toy", input_size=side, num_classes=2, mean=(0, 0, 0), std=(1, 1, 1))


def test_relevance_order_ranks_and_breaks_ties_at_random():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 3, 3], m[0, 0, 0, 1] = 1.0, 0.5
    order = relevance_order(m)
    assert order[0, :2].tolist() == [15, 1]
    # the 14 tied zeros do not come out in index order
    assert order[0, 2:].tolist() != sorted(order[0, 2:].tolist())
    assert torch.equal(order, relevance_order(m))


def test_trapezoid_by_hand():
    assert trapezoid_auc([0, 0.5, 1], torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(0.75)


@pytest.mark.parametrize("imputation", ["telea", "linear"])
def test_road_by_hand(imputation):
    clf = _toy(_BrightSpot(), 16)
    x = torch.full((1, 3, 16, 16), 0.5)
    x[..., :4, :4] = 1.0  # the only evidence: 16 of 256 pixels (6.25%)
    m = torch.zeros(1, 1, 16, 16)
    m[..., :4, :4] = 1.0
    out = road(clf, x, m, imputation=imputation)
    # MoRF removes the spot at every level (>= 10% removed) and inpainting fills it grey
    assert out["morf"].tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert out["morf_auc"].item() == pytest.approx(0.1 * 1 / 2)
    # LeRF never reaches the spot before 93.75% removed
    assert out["lerf"].tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert out["lerf_auc"].item() == pytest.approx(0.7 + 0.3 / 2)
    # a map that points elsewhere is judged the other way round
    flipped = road(clf, x, 1 - m, imputation=imputation)
    assert flipped["morf_auc"] > out["morf_auc"] and flipped["lerf_auc"] < out["lerf_auc"]


def test_telea_fills_each_image_as_opencv_does_alone():
    import cv2

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 23, 31, generator=g)
    removed = torch.rand(6, 23, 31, generator=g) < 0.3
    removed[2] = False  # nothing to fill: the image comes back unchanged
    out = telea_inpaint(x, removed)  # the images are filled on several threads
    assert torch.equal(out[2], x[2])
    for i in (0, 1, 3, 4, 5):
        as_uint8 = (x[i].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        alone = cv2.inpaint(as_uint8, removed[i].to(torch.uint8).numpy(), 3, cv2.INPAINT_TELEA)
        expect = torch.where(removed[i], torch.from_numpy(alone).permute(2, 0, 1) / 255.0, x[i])
        assert torch.equal(out[i], expect)
        assert not torch.equal(out[i], x[i])


def test_deletion_insertion_by_hand():
    clf = _toy(_MeanBrightness(), 8)
    x = torch.ones(1, 3, 8, 8)
    m = torch.rand(1, 1, 8, 8)
    out = deletion_insertion(clf, x, m, steps=4, insertion_substrate="black")
    f = torch.linspace(0, 1, 5)
    # deleting a fraction f of a white image to black leaves mean 1-f: p0 = sigmoid(4(1-f))
    assert torch.allclose(out["deletion"][0], torch.sigmoid(4 * (1 - f)), atol=1e-6)
    assert torch.allclose(out["insertion"][0], torch.sigmoid(4 * f), atol=1e-6)
    assert out["deletion_auc"].item() == pytest.approx(trapezoid_auc(f.tolist(), torch.sigmoid(4 * (1 - f))).item())


def test_pass_counter_counts_images_forward_and_backward(tiny_backbone):
    from glancemap.methods import RISE, GradCamMethod

    x = torch.rand(2, 3, *tiny_backbone.input_size)
    with PassCounter(backbone=tiny_backbone) as c:
        GradCamMethod(tiny_backbone, "gradcam")(x, torch.tensor([0, 1]))
    assert c.counts == {"backbone_forward": 2, "backbone_backward": 2}
    with PassCounter(backbone=tiny_backbone) as c:
        RISE(tiny_backbone, n_masks=20, batch_size=8)(x, torch.tensor([0, 1]))
    assert c.counts == {"backbone_forward": 40, "backbone_backward": 0}


# ------------------------------------------------------- agreement with grad-cam's metrics


def test_average_drop_and_increase_agree_with_grad_cam():
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    net = _sensitive_net()
    torch.manual_seed(1)
    x = torch.rand(8, 3, 16, 16)
    maps = torch.rand(8, 1, 16, 16)
    ours = confidence_change(net, x, maps, keep=1.0)
    assert ours["drop"].std() > 1 and 0 < ours["increase"].mean() < 100  # the check has teeth
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in ours["target"]]
    cams = maps[:, 0].numpy()
    # grad-cam reports the absolute drop of the score; AD divides it by the clean score
    theirs_drop = DropInConfidence()(x, cams, targets, net)
    theirs_inc = IncreaseInConfidence()(x, cams, targets, net)
    assert np.allclose(ours["drop"].numpy(), 100 * theirs_drop / ours["clean_score"].numpy(), atol=1e-4)
    assert np.array_equal(ours["increase"].numpy() / 100, theirs_inc)


def test_road_probabilities_agree_with_grad_cam():
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    net = _sensitive_net()
    torch.manual_seed(2)
    x = torch.rand(3, 3, 16, 16)
    maps = torch.rand(3, 1, 16, 16)  # distinct values: no ties to break
    fractions = (0.1, 0.3, 0.5, 0.7)
    ours = road(net, x, maps, fractions, imputation=functools.partial(linear_inpaint, noise=0.0))
    assert (ours["morf_prob"] - ours["lerf_prob"]).abs().max() > 0.05  # the check has teeth
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in net(x).argmax(1)]
    cams = maps[:, 0].numpy()
    for j, f in enumerate(fractions):
        # grad-cam's percentile is the share of pixels it keeps; ours is the share removed
        for key, remover in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
            metric = PerturbationConfidenceMetric(remover(100 * (1 - f), NoisyLinearImputer(noise=0.0)))
            theirs = metric(x, cams, targets, net, return_diff=False)
            assert np.allclose(ours[f"{key}_prob"][:, j].numpy(), theirs, atol=1e-4), (key, f)
