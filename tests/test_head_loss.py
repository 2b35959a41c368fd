import math

import pytest
import torch
import torch.nn.functional as F

from glancemap.explainer import (
    AttentionHead,
    LossWeights,
    PTameLoss,
    area_loss,
    minmax_normalize,
    perturb,
    total_variation,
)


def _features(b=2):
    torch.manual_seed(0)
    return [torch.rand(b, 4, 8, 8), torch.rand(b, 6, 4, 4), torch.rand(b, 5, 2, 2)]


def test_head_layout():
    head = AttentionHead([4, 6, 5], num_classes=7)
    assert len(head.blocks) == 3
    assert [b.conv.weight.shape for b in head.blocks] == [(4, 4, 1, 1), (6, 6, 1, 1), (5, 5, 1, 1)]
    assert head.fuse.weight.shape == (7, 15, 1, 1)
    assert head.fuse.bias is None  # the paper's head has no bias by default


def test_stagewise_fusion_equals_upsample_concat_conv():
    head = AttentionHead([4, 6, 5], num_classes=7, bias=True).eval()
    with torch.no_grad():
        head.fuse.bias.normal_()
    feats = _features()
    # the textbook order: block, upsample each to the finest, concatenate, 1x1 conv
    up = [F.interpolate(b(f), size=(8, 8), mode="bilinear", align_corners=False) for b, f in zip(head.blocks, feats)]
    reference = head.fuse(torch.cat(up, dim=1))
    assert torch.allclose(head(feats), reference, atol=1e-5)
    cls = torch.tensor([3, 0, 3])
    assert torch.allclose(head(feats, cls), reference[:, cls], atol=1e-5)
    per = torch.tensor([5, 1])
    assert torch.allclose(head(feats, per, per_sample=True)[:, 0], reference[torch.arange(2), per], atol=1e-5)
    # weights given directly: any per-image weight vector, e.g. a difference of two classes' weights
    w = head.fuse.weight.flatten(1)
    b = head.fuse.bias
    diff = head.fuse_with(feats, (w[per] - w[[2, 2]]).unsqueeze(1), (b[per] - b[2]).unsqueeze(1))
    assert torch.allclose(diff[:, 0], (reference[torch.arange(2), per] - reference[:, 2]), atol=1e-5)


def test_block_is_residual_relu():
    head = AttentionHead([4], num_classes=2).eval()
    f = torch.randn(1, 4, 3, 3)
    block = head.blocks[0]
    assert torch.allclose(block(f), torch.relu(block.bn(block.conv(f)) + f))


def test_cam_init_reproduces_cam():
    head = AttentionHead([4, 3], num_classes=2).eval()
    w = torch.randn(2, 3)
    head.init_from_cam(w)
    f_last = torch.rand(1, 3, 2, 2)  # post-ReLU features, as before global pooling
    out = head([torch.rand(1, 4, 4, 4), f_last])
    cam = torch.einsum("kc,bchw->bkhw", w, f_last)
    assert torch.allclose(out, F.interpolate(cam, size=(4, 4), mode="bilinear", align_corners=False), atol=1e-5)


def test_area_loss_by_hand():
    zeros = torch.zeros(2, 2, 4, 4)
    ones = torch.ones(2, 2, 4, 4)
    assert math.isclose(area_loss(zeros, 0.3).item(), 0.0005**0.3, rel_tol=1e-5)
    assert math.isclose(area_loss(ones, 0.3).item(), 1.0005**0.3, rel_tol=1e-5)
    half = torch.cat([zeros[:, :, :2], ones[:, :, :2]], dim=2)
    assert math.isclose(area_loss(half, 1.0).item(), 0.5 + 0.0005, rel_tol=1e-5)


def test_total_variation_by_hand():
    m = torch.zeros(1, 1, 4, 4)
    m[..., :, 2:] = 1.0  # a vertical edge: 4 rows with one unit jump each
    assert math.isclose(total_variation(m, beta=0.0).item(), 4 / 2)
    # border pixels: 12 on a 4x4 map, 6 of them in the right half
    assert math.isclose(total_variation(m, beta=0.5).item(), (4 + 0.5 * 6) / 2)
    m2 = torch.cat([m, m], dim=0)  # normalised by batch size
    assert math.isclose(total_variation(m2, beta=0.5).item(), (4 + 0.5 * 6) / 2)
    inner = torch.zeros(1, 1, 4, 4)
    inner[..., 1:3, 1:3] = 1.0
    assert math.isclose(total_variation(inner, beta=1.0).item(), 8 / 2)  # no border mass


def test_loss_combines_terms_with_weights():
    w = LossWeights(ce=2.0, area=3.0, tv=0.5, p_area=1.0, beta=0.0, destroy=0.0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1])
    maps = torch.rand(2, 2, 5, 5)
    total, terms = PTameLoss(w)(logits, targets, maps)
    expected = 2 * F.cross_entropy(logits, targets) + 3 * (maps + 0.0005).mean() + 0.5 * total_variation(maps, 0.0)
    assert torch.allclose(total, expected)
    assert set(terms) == {"ce", "area", "tv"}


def test_perturbation_is_a_product_in_pixel_space():
    img = torch.rand(2, 3, 8, 8)
    m = torch.zeros(2, 1, 4, 4)
    m[0] = 1.0
    out = perturb(img, m)
    assert torch.allclose(out[0], img[0]) and torch.all(out[1] == 0)
    half = perturb(img, torch.full((2, 1, 2, 2), 0.5))
    assert torch.allclose(half, img * 0.5)


def test_minmax_normalize():
    m = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    n = minmax_normalize(m)
    assert torch.allclose(n[0].flatten(), torch.tensor([0.0, 0.5, 0.25, 1.0]))
    assert torch.all(n[1] == 0)


def test_destroy_term_by_hand():
    import math

    from glancemap.explainer.loss import LossWeights, PTameLoss, destroy_loss

    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # target probabilities 1/2 and 3/4
    targets = torch.tensor([0, 0])
    assert destroy_loss(logits, targets).item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-5)
    maps = torch.rand(2, 2, 4, 4)
    plain, _ = PTameLoss(LossWeights(destroy=0.0))(logits, targets, maps)
    total, terms = PTameLoss(LossWeights(destroy=2.0))(logits, targets, maps, logits_removed=logits)
    assert total.item() == pytest.approx(plain.item() + 2.0 * terms["destroy"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="destroy term"):
        PTameLoss(LossWeights(destroy=1.0))(logits, targets, maps)


def _shared_and_per_class(readout):
    from glancemap.explainer import SharedReadoutHead

    shared = SharedReadoutHead([4, 6, 5], readout).eval()
    per_class = AttentionHead([4, 6, 5], num_classes=readout.shape[0], bias=True).eval()
    return shared, per_class


def test_shared_head_starts_as_the_same_cam_as_the_per_class_head():
    torch.manual_seed(0)
    readout = torch.randn(7, 5)
    shared, per_class = _shared_and_per_class(readout)
    shared.init_from_cam(readout)
    per_class.init_from_cam(readout)
    shared.rescale_(0.5, -1.0)
    per_class.rescale_(0.5, -1.0)
    feats = _features()
    assert torch.allclose(shared(feats), per_class(feats), atol=1e-5)
    cls = torch.tensor([6, 2])
    assert torch.allclose(shared(feats, cls, per_sample=True), per_class(feats, cls, per_sample=True), atol=1e-5)
    with pytest.raises(ValueError, match="its own readout"):
        shared.init_from_cam(torch.randn(7, 5))


def test_shared_head_weights_are_readout_times_projection():
    torch.manual_seed(0)
    readout = torch.randn(7, 5)
    shared, _ = _shared_and_per_class(readout)
    with torch.no_grad():
        shared.offset.fill_(0.3)
    weight, bias = shared.class_weights(torch.tensor([4, 1]))
    assert torch.allclose(weight, readout[[4, 1]] @ shared.projection)
    assert torch.equal(bias, torch.full((2,), 0.3))
    assert "readout" not in shared.state_dict()  # rebuilt from the auxiliary, never saved


def test_shared_head_trains_classes_absent_from_the_batch():
    # the per-class head cannot move class 5's map from images of class 0; the shared head does
    torch.manual_seed(0)
    readout = torch.randn(7, 5)
    shared, per_class = _shared_and_per_class(readout)
    feats = _features()
    for head in (shared, per_class):
        head(feats, torch.tensor([0, 0]), per_sample=True).sum().backward()
    assert per_class.fuse.weight.grad[5].abs().sum() == 0
    with torch.no_grad():
        before = shared(feats, torch.tensor([5]))
        shared.projection -= 0.1 * shared.projection.grad
        assert not torch.allclose(before, shared(feats, torch.tensor([5])))


def _diffuse(images, maps, sigma):
    """Removal filled by one scale of the diffusion that the inpaint fill runs at three."""
    from glancemap.explainer.perturbation import diffuse_fill
    from glancemap.maps import resize_maps

    m = resize_maps(maps, images.shape[-2:])
    return images * (1 - m) + diffuse_fill(images, 1 - m, (sigma,)).clamp(0, 1) * m


def test_diffuse_removal_fills_only_from_kept_pixels():
    from glancemap.explainer.perturbation import remove_regions

    torch.manual_seed(0)
    img = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 10:22] = 1.0
    other = img.clone()
    other[..., 8:20, 10:22] = torch.rand(1, 3, 12, 12)  # change only what is removed
    diffuse = _diffuse(img, mask, 3.0)
    assert torch.allclose(diffuse, _diffuse(other, mask, 3.0))
    assert torch.equal(diffuse[..., :8, :], img[..., :8, :])  # kept pixels untouched
    # a blurred copy leaks the removed content back
    assert not torch.allclose(
        remove_regions(img, mask, "blur", sigma=3.0), remove_regions(other, mask, "blur", sigma=3.0)
    )
    # a flat image stays flat whatever is removed, and the maps get gradients
    flat = torch.full((1, 3, 32, 32), 0.3)
    soft = torch.rand(1, 1, 8, 8, requires_grad=True)
    out = _diffuse(flat, soft, 3.0)
    assert torch.allclose(out, flat, atol=1e-5)
    _diffuse(img, soft, 3.0).sum().backward()
    assert soft.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown fill"):
        remove_regions(img, mask, "noise")


def test_top_fraction_mask_is_hard_forward_and_soft_backward():
    from glancemap.explainer.perturbation import top_fraction_mask

    torch.manual_seed(0)
    scores = torch.randn(3, 1, 10, 10, requires_grad=True)
    fraction = torch.tensor([0.1, 0.3, 0.55])
    mask = top_fraction_mask(scores, fraction)
    hard = mask.detach().round()
    assert torch.allclose(mask.detach(), hard, atol=1e-6)  # 0/1 up to float rounding of the straight-through sum
    assert hard.flatten(1).sum(1).tolist() == [10.0, 30.0, 55.0]
    flat = scores.detach().flatten(1)
    for i, k in enumerate((10, 30, 55)):  # exactly the k highest pixels
        assert torch.equal(hard.flatten(1)[i].bool(), flat[i] >= flat[i].topk(k).values[-1])
    # raising a pixel can only add it to the removed set: the gradient of the count is >= 0,
    # and largest just around each map's cut
    mask.sum().backward()
    g = scores.grad.flatten(1)
    assert (g >= 0).all() and (g > 0).any()
    cut = flat.sort(dim=1, descending=True).values[torch.arange(3), torch.tensor([9, 29, 54])]
    nearest = (flat - cut[:, None]).abs().argmin(dim=1)
    assert torch.equal(g.argmax(dim=1), nearest)


def test_inpaint_fill_reaches_the_middle_of_large_holes():
    from glancemap.explainer.perturbation import remove_regions

    img = torch.full((1, 3, 64, 64), 0.6)
    img[..., 20:44, 20:44] = torch.rand(1, 3, 24, 24)  # an object on a flat background
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 16:48, 16:48] = 1.0
    inpainted = remove_regions(img, hole, "inpaint", sigma=2.0)
    diffused = _diffuse(img, hole, 2.0)
    assert torch.allclose(inpainted, torch.full_like(img, 0.6), atol=1e-3)  # background colour, no object left
    assert diffused[..., 32, 32].max() < 0.1  # one small scale cannot reach 16 px in: near black


def test_rank_destroy_term_by_hand():
    import math

    from glancemap.explainer.loss import LossWeights, PTameLoss

    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    maps = torch.rand(2, 2, 4, 4)
    plain, _ = PTameLoss(LossWeights(destroy=0.0))(logits, targets, maps)
    total, terms = PTameLoss(LossWeights(destroy=0.0, rank_destroy=0.5))(
        logits, targets, maps, logits_rank_removed=logits
    )
    assert terms["rank_destroy"].item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-5)
    assert total.item() == pytest.approx(plain.item() + 0.5 * terms["rank_destroy"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="rank_destroy term"):
        PTameLoss(LossWeights(destroy=0.0, rank_destroy=1.0))(logits, targets, maps)
    with pytest.raises(ValueError, match="rank_fractions"):
        LossWeights(rank_fractions=(0.5, 0.2))
    assert LossWeights(rank_fractions=[0.2, 0.4]).rank_fractions == (0.2, 0.4)


def test_rescale_of_a_head_without_bias_scales_only():
    head = AttentionHead([4, 6, 5], num_classes=7, bias=False).eval()
    feats = _features()
    before = head(feats)
    head.rescale_(2.0, -1.0)
    assert torch.allclose(head(feats), 2.0 * before, atol=1e-5)
