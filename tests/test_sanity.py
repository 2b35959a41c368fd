"""Cascading model randomisation on random-weight nets: nothing downloaded."""

import json

import torch

from glancemap.images import list_images
from glancemap.methods import MethodContext, create_method
from glancemap.sanity import cascading_randomization, ptame_factory, randomization_stages, spearman


def test_spearman_by_hand():
    a = torch.arange(16.0).view(1, 1, 4, 4)
    assert spearman(a, a, side=4).item() == 1.0
    assert spearman(a, -a, side=4).item() == -1.0
    assert spearman(a, torch.ones_like(a), side=4).item() == 0.0  # a constant map has no ranking


def test_stages_go_from_output_to_input(tiny_backbone):
    stages = randomization_stages(tiny_backbone.model)
    assert stages[0] == ["classifier"] and stages[-1] == ["conv_stem"]
    assert ["blocks.0"] in stages  # the trunk is opened block by block


def test_gradcam_reacts_and_auxiliary_cam_does_not(tiny_backbone, tiny_aux, tmp_path, image_folder):
    before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    images = torch.rand(3, 3, *tiny_backbone.input_size)
    methods = {
        "gradcam": lambda bb, k: create_method("gradcam", MethodContext(bb)),
        "auxcam": lambda bb, k: create_method("auxcam", MethodContext(bb, auxiliary=tiny_aux)),
        "ptame": ptame_factory(
            tiny_aux.name,
            list_images([image_folder]),
            tmp_path / "heads",
            steps=1,
            batch_size=4,
            auxiliary_weights="random",
            backbone_weights="random",
        ),
    }
    stages = randomization_stages(tiny_backbone.model)
    rows = cascading_randomization(tiny_backbone, methods, images, [stages[0], sum(stages[1:], [])], log=lambda s: None)
    rho = {(r["method"], r["stage"]): r["spearman"] for r in rows}
    assert len(rows) == 9 and rho[("gradcam", 0)] == 1.0
    assert rho[("gradcam", 2)] < 0.9  # a randomised network gives other maps
    assert rho[("auxcam", 2)] == 1.0  # never reads the backbone: fails the check, as it must
    assert (tmp_path / "heads" / "stage2" / "explainer" / "head.safetensors").exists()
    # the caller's backbone is left as it was
    assert all(torch.equal(v, tiny_backbone.state_dict()[k]) for k, v in before.items())


def test_sanity_command(tmp_path, tiny_explainer, image_folder, capsys):
    from glancemap.cli import main

    tiny_explainer.save(tmp_path / "expl")
    out = tmp_path / "sanity"
    rc = main(
        [
            "sanity",
            "--data",
            str(image_folder),
            "--explainer",
            str(tmp_path / "expl"),
            "--out",
            str(out),
            "--methods",
            "gradcam,auxcam",
            "--images",
            "3",
            "--max-stages",
            "2",
        ]
    )
    assert rc == 0
    text = (out / "sanity.md").read_text()
    assert "| Grad-CAM | Auxiliary CAM |" in text and text.count("\n| ") == 3  # stages 0, 1 and "the rest"
    assert (
        main(["sanity", "--data", str(image_folder), "--explainer", str(tmp_path / "expl"), "--methods", "ptame"]) == 2
    )  # ptame needs --train-data
    assert "--train-data" in capsys.readouterr().err


def test_sanity_retrains_with_the_explainers_own_recipe():
    from glancemap.explainer import read_explainer_config
    from glancemap.training import TrainConfig, training_recipe

    cfg = read_explainer_config("default")
    recipe = training_recipe(cfg)
    assert recipe["head"] == cfg["head"] and recipe["lr"] == cfg["training"]["lr"]
    assert recipe["loss"] == cfg["training"]["loss_weights"]
    assert recipe["train_aux_sides"] == cfg["training"]["train_aux_sides"] == [224, 320]  # the shipped head's sides
    # the recipe is a valid TrainConfig whose loss is the shipped explainer's
    config = TrainConfig(data=[], out="unused", **recipe)
    resolved = json.loads(json.dumps(config.loss_weights().to_dict()))  # tuples as JSON lists, like the config's
    assert all(resolved[k] == v for k, v in cfg["training"]["loss_weights"].items())
    assert training_recipe({"training": {}}) == {"head": "per-class"}  # configs from before the shared head


def test_ptame_retraining_can_be_run_again_into_the_same_folder(tmp_path, tiny_backbone, tiny_aux, image_folder):
    from glancemap.images import list_images
    from glancemap.sanity import ptame_factory

    files = list_images([image_folder])
    make = ptame_factory(tiny_aux.name, files, tmp_path / "heads", 1, 4, auxiliary_weights="random", workers=0)
    make(tiny_backbone, 0)
    again = make(tiny_backbone, 0)  # the check owns its stage folders: a rerun replaces them
    assert again.training_info["steps"] == 1
