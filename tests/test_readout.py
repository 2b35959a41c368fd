"""Other label sets: the distilled readout and the pooled-logits backbone."""

import json

import pytest
import torch
import torch.nn as nn

from glancemap import load_classifier
from glancemap.models.grouped import GroupedLogits, grouped_classifier
from glancemap.training.config import auto_steps
from glancemap.training.readout import fit_readout, views_per_image


def test_fit_readout_recovers_a_linear_teacher_on_held_out_images():
    g = torch.Generator().manual_seed(0)
    n, views, d, k = 120, 3, 16, 4
    x = torch.randn(n, views, d, generator=g).abs() * 2 + 1  # post-ReLU-like pooled features, not centred
    teacher = torch.randn(k, d, generator=g)
    probs = (x @ teacher.T / 2).softmax(-1)
    fit = fit_readout(x, probs)
    assert fit.weight.shape == (k, d) and fit.bias.shape == (k,)
    assert fit.agreement > 0.9, fit.info()  # cross-validated over images, not views
    assert fit.cross_entropy < fit.backbone_entropy + 0.1
    # the weights act on raw features: they reproduce the teacher's distribution without standardising
    pred = (x @ fit.weight.T + fit.bias).log_softmax(-1)
    assert (pred.argmax(-1) == probs.argmax(-1)).float().mean() > 0.95
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_readout(x[:1], probs[:1])


def test_many_classes_fit_at_a_fixed_ridge():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 2, 8, generator=g)
    probs = (x @ torch.randn(150, 8, generator=g).T).softmax(-1)
    fit = fit_readout(x, probs)
    assert fit.weight.shape == (150, 8) and fit.ridge == 1e-2 and 0 <= fit.agreement <= 1


def test_noise_targets_get_a_strong_ridge_and_chance_agreement():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 2, 32, generator=g)
    probs = torch.randn(60, 2, 5, generator=g).softmax(-1)  # unrelated to the features
    fit = fit_readout(x, probs)
    assert fit.ridge >= 1e-2 and fit.agreement < 0.5


def test_views_and_default_schedule_follow_the_image_count():
    assert views_per_image(161) == 7 and views_per_image(800) == 2 and views_per_image(10) == 8
    assert (
        auto_steps(161, 32) == 242
        and auto_steps(800, 32) == 1200
        and auto_steps(20, 32) == 200
        and auto_steps(10_000, 32) == 1200
    )


def test_grouped_logits_pool_probabilities_by_group():
    net = nn.Linear(3, 6)
    grouped = GroupedLogits(net, [[0, 1], [2], [3, 4, 5]], 6)
    x = torch.randn(4, 3)
    p, q = net(x).softmax(-1), grouped(x).softmax(-1)
    assert torch.allclose(q, torch.stack([p[:, :2].sum(1), p[:, 2], p[:, 3:].sum(1)], 1), atol=1e-6)
    with pytest.raises(ValueError, match="indices in"):
        GroupedLogits(net, [[0, 6]], 6)


def test_a_grouped_classifier_keeps_the_base_preprocessing_and_layer_names():
    base = load_classifier("test_efficientnet", "random")
    clf = grouped_classifier(base, {"low": range(0, 500), "high": range(500, 1000)}, "halves")
    assert clf.class_names == ["low", "high"] and clf.input_size == base.input_size
    x = torch.rand(2, 3, *clf.input_size)
    p = base(x).softmax(-1)
    assert torch.allclose(clf(x).softmax(-1)[:, 0], p[:, :500].sum(1), atol=1e-5)
    assert "net.conv_head" in dict(clf.model.named_modules())


def test_the_default_command_on_the_imagenet_backbone_is_the_shipped_recipe():
    """`glancemap train IMAGES --out DIR` on Lite2 with Lite0 (800 images) trains what the shipped default
    explainer was trained with: the general defaults must not cost the case that works."""
    from glancemap.explainer import read_explainer_config
    from glancemap.training import TrainConfig, training_recipe

    shipped = read_explainer_config("default")
    recipe, info = training_recipe(shipped), shipped["training"]
    cfg = TrainConfig(data=[], out="")
    assert (cfg.backbone, cfg.auxiliary) == (shipped["backbone"]["name"], shipped["auxiliary"]["name"])
    assert cfg.aux_sides(224) == (recipe["train_aux_sides"], [side for side, _ in shipped["extra_aux_sizes"]])
    assert json.loads(json.dumps(cfg.loss_weights().to_dict())) == recipe["loss"]
    assert (cfg.lr, cfg.resolved_weight_decay(), cfg.init) == (recipe["lr"], recipe["weight_decay"], recipe["init"])
    assert cfg.head == "auto" and recipe["head"] == "shared"  # auto picks shared when the auxiliary has the classes
    assert auto_steps(info["images"], cfg.batch_size) == info["steps"] and cfg.batch_size == info["batch_size"]
    # and it shows the maps as the shipped explainer does: train gives a shared head on the auxiliary's own
    # classifier this gate (tests/test_training.py), the rest of the display is the plain one
    from glancemap.explainer.explainer import DEFAULT_GATE_MARGIN

    assert shipped["gate_margin"] == DEFAULT_GATE_MARGIN and shipped.get("negative_slope", 1.0) == 1.0
