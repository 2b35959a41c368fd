import torch
import torch.nn as nn

from ptame import Classifier
from ptame.baselines import CenteredGaussian, UniformRandom
from ptame.metrics import confidence_change, keep_top_fraction


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
