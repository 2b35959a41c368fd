import json

import pytest
import torch

from glancemap import ExplainerMismatchError, PTameExplainer, load_classifier, load_explainer


def test_maps_shapes_and_range(tiny_explainer):
    x = torch.rand(3, 3, *tiny_explainer.input_size)
    maps = tiny_explainer(x)
    assert maps.shape == (3, 1, *tiny_explainer.input_size)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(1).max(1).values, torch.ones(3))


def test_default_target_is_backbone_top1(tiny_explainer):
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    top1 = tiny_explainer.backbone(x).argmax(1)
    assert torch.equal(tiny_explainer(x), tiny_explainer(x, top1))
    other = (top1 + 1) % tiny_explainer.num_classes
    assert not torch.equal(tiny_explainer(x), tiny_explainer(x, other))


def test_all_maps_agree_with_single_maps(tiny_explainer):
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    every = tiny_explainer.all_maps(x)
    assert every.shape == (2, tiny_explainer.num_classes, *tiny_explainer.input_size)
    t = torch.tensor([4, 9])
    assert torch.allclose(every[torch.arange(2), t], tiny_explainer(x, t)[:, 0], atol=1e-5)
    head_res = tiny_explainer.all_maps(x, resolution="head")
    assert head_res.shape[-1] < every.shape[-1]


def test_predict_and_explain(tiny_explainer):
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    out = tiny_explainer.predict_and_explain(x, top_k=3)
    assert out["classes"].shape == (2, 3) and out["maps"].shape == (2, 3, *tiny_explainer.input_size)
    assert torch.all(out["scores"][:, :-1] >= out["scores"][:, 1:])
    assert torch.allclose(out["maps"][:, 1], tiny_explainer(x, out["classes"][:, 1])[:, 0], atol=1e-5)


def test_bad_inputs_are_refused(tiny_explainer):
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        tiny_explainer(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="one target per image"):
        tiny_explainer(torch.rand(2, 3, 32, 32), [1, 2, 3])
    with pytest.raises(ValueError, match="targets must be in"):
        tiny_explainer(torch.rand(1, 3, 32, 32), [10**6])


def test_head_does_not_read_the_backbone_given_targets(tiny_explainer):
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    t = torch.tensor([1, 2])
    before = tiny_explainer(x, t)
    kept = {k: v.clone() for k, v in tiny_explainer.backbone.state_dict().items()}
    with torch.no_grad():
        for p in tiny_explainer.backbone.parameters():
            p.mul_(-3.0)
    try:
        assert torch.equal(before, tiny_explainer(x, t))
    finally:  # the backbone is shared by the whole session: later tests reload it by name
        tiny_explainer.backbone.load_state_dict(kept)


def test_save_load_round_trip(tmp_path, tiny_explainer, tiny_backbone, tiny_aux):
    with torch.no_grad():
        for p in tiny_explainer.head.parameters():
            p.normal_()
    tiny_explainer.save(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["backbone"]["name"] == tiny_backbone.name and cfg["num_classes"] == tiny_backbone.num_classes
    assert cfg["glancemap_version"] and cfg["layers"] == tiny_explainer.layers
    loaded = load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux)
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    assert torch.equal(tiny_explainer(x, [0, 1]), loaded(x, [0, 1]))


def test_folder_written_under_the_old_name_still_loads(tmp_path, tiny_explainer, tiny_backbone, tiny_aux):
    tiny_explainer.save(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["format"] = "ptame-explainer/1"  # as written before the project was renamed
    cfg["ptame_version"] = cfg.pop("glancemap_version")
    path.write_text(json.dumps(cfg))
    loaded = load_explainer(tmp_path / "old", backbone=tiny_backbone, auxiliary=tiny_aux)
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    assert torch.equal(tiny_explainer(x, [0, 1]), loaded(x, [0, 1]))
    cfg["format"] = "someone-else/1"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown format"):
        load_explainer(tmp_path / "old", backbone=tiny_backbone, auxiliary=tiny_aux)


def test_mismatched_explainer_is_refused(tmp_path, tiny_explainer, tiny_backbone, tiny_aux):
    tiny_explainer.save(tmp_path / "e")
    other = load_classifier("test_resnet", "random")
    with pytest.raises(ExplainerMismatchError, match="trained for backbone 'test_efficientnet'"):
        load_explainer(tmp_path / "e", backbone=other, auxiliary=tiny_aux)
    with pytest.raises(ExplainerMismatchError, match="trained for auxiliary"):
        load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_backbone)
    fewer = load_classifier("test_efficientnet", "random", num_classes=10)
    with pytest.raises(ExplainerMismatchError, match="classes"):
        load_explainer(tmp_path / "e", backbone=fewer, auxiliary=tiny_aux)


def test_head_file_for_another_class_count_is_refused(tmp_path, tiny_backbone, tiny_aux):
    ten = load_classifier("test_efficientnet", "random", num_classes=10)
    PTameExplainer(ten, tiny_aux).save(tmp_path / "ten")
    PTameExplainer(tiny_backbone, tiny_aux).save(tmp_path / "full")
    (tmp_path / "full" / "head.safetensors").write_bytes((tmp_path / "ten" / "head.safetensors").read_bytes())
    with pytest.raises(ExplainerMismatchError, match="shape"):
        load_explainer(tmp_path / "full", backbone=tiny_backbone, auxiliary=tiny_aux)


def test_not_an_explainer_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a glancemap explainer"):
        load_explainer(tmp_path)


def test_shipped_default_config_is_readable():
    from glancemap.explainer import read_explainer_config

    cfg = read_explainer_config("default")
    assert cfg["backbone"]["name"] == "efficientnet_lite2"
    assert cfg["auxiliary"]["name"] == "efficientnet_lite0"
    assert cfg["num_classes"] == 1000


def test_shipped_explainers_by_name():
    from glancemap.explainer import read_explainer_config, shipped_explainers

    assert {"default", "efficientnet_lite1", "selective"} <= set(shipped_explainers())
    cfg = read_explainer_config("efficientnet_lite1")
    assert cfg["backbone"]["name"] == "efficientnet_lite1" and cfg["auxiliary"]["name"] == "efficientnet_lite0"
    cfg = read_explainer_config("selective")  # the default's recipe, a rank-16 change only, shown at the zero
    assert cfg["backbone"]["name"] == "efficientnet_lite2" and cfg["training"]["low_rank"] == 16
    assert (cfg["negative_slope"], cfg["negative_at"], cfg["gate_margin"]) == (0.01, "zero", 4.0)


def test_shared_head_round_trip_rebuilds_readout_from_auxiliary(tmp_path, tiny_backbone, tiny_aux):
    torch.manual_seed(3)
    shared = PTameExplainer(tiny_backbone, tiny_aux, head="shared")
    with torch.no_grad():
        shared.head.projection.normal_()
    shared.save(tmp_path / "s")
    saved_cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert saved_cfg["head"] == "shared" and saved_cfg["head_bias"] is True
    loaded = load_explainer(tmp_path / "s", backbone=tiny_backbone, auxiliary=tiny_aux)
    assert loaded.head.kind == "shared"
    assert torch.equal(loaded.head.readout, shared.head.readout)
    x = torch.rand(2, 3, *shared.input_size)
    assert torch.equal(shared(x, [3, 4]), loaded(x, [3, 4]))
    # a per-class explainer's file does not load as a shared one, and the error says why
    PTameExplainer(tiny_backbone, tiny_aux).save(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg | {"head": "shared"}))
    with pytest.raises(ExplainerMismatchError, match="missing tensor"):
        load_explainer(tmp_path / "p", backbone=tiny_backbone, auxiliary=tiny_aux)


def test_shared_head_needs_the_backbones_classes_on_the_auxiliary(tiny_aux):
    ten = load_classifier("test_efficientnet", "random", num_classes=10)
    with pytest.raises(ValueError, match="does not have backbone .* classes, so give a readout"):
        PTameExplainer(ten, tiny_aux, head="shared")
    d = tiny_aux.model.num_features
    with pytest.raises(ValueError, match="does not fit K=10 classes"):
        PTameExplainer(ten, tiny_aux, head="shared", readout=torch.zeros(9, d))
    shared = PTameExplainer(ten, tiny_aux, head="shared", readout=torch.randn(10, d))
    assert shared.head.kind == "shared" and shared.config()["readout"] == "distilled"
    assert "readout" in shared.head.state_dict()  # a distilled readout is saved with the head
    with pytest.raises(ValueError, match="unknown head"):
        PTameExplainer(ten, tiny_aux, head="tiny")


def _random_head(explainer, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in explainer.head.parameters():
            p.normal_()


def test_multi_scale_maps_average_the_single_scale_maps(tiny_backbone, tiny_aux):
    base = tuple(PTameExplainer(tiny_backbone, tiny_aux).features.input_size)
    big = (base[0] * 3 // 2, base[1] * 3 // 2)
    multi = PTameExplainer(tiny_backbone, tiny_aux, extra_aux_sizes=[big[0]])
    _random_head(multi)
    assert multi.aux_sizes == [base, big]
    # the same head weights in two single-pass explainers, one trained-size and one at the extra size
    singles = [PTameExplainer(tiny_backbone, tiny_aux, aux_input_size=s) for s in (base, big)]
    for s in singles:
        s.head.load_state_dict(multi.head.state_dict())
    x = torch.rand(2, 3, *multi.input_size)
    t = torch.tensor([3, 7])
    mean = (singles[0](x, t) + singles[1](x, t)) / 2
    lo, hi = mean.flatten(1).min(1).values, mean.flatten(1).max(1).values
    expected = (mean - lo.view(-1, 1, 1, 1)) / (hi - lo).view(-1, 1, 1, 1)
    got = multi(x, t)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, singles[0](x, t), atol=1e-3)  # the extra pass changes the map
    every = multi.all_maps(x)
    assert torch.allclose(every[torch.arange(2), t], got[:, 0], atol=1e-5)
    assert multi.all_maps(x, resolution="head").shape[-2:] == multi.features.feature_shapes()[0][1:]
    out = multi.predict_and_explain(x, top_k=2)
    assert torch.allclose(out["maps"][:, 1], multi(x, out["classes"][:, 1])[:, 0], atol=1e-5)


def test_other_aux_sizes_run_the_same_head_and_leave_the_explainer_alone(tiny_backbone, tiny_aux):
    multi = PTameExplainer(tiny_backbone, tiny_aux, extra_aux_sizes=[48])
    _random_head(multi)
    base = tuple(multi.features.input_size)
    small = (base[0] // 2, base[1] // 2)
    cheap = multi.with_aux_sizes([small[0]])
    assert cheap.aux_sizes == [small] and cheap.head is multi.head and cheap.auxiliary is multi.auxiliary
    assert multi.aux_sizes == [base, (48, 48)]  # the original keeps its sides
    alone = PTameExplainer(tiny_backbone, tiny_aux, aux_input_size=small)
    alone.head.load_state_dict(multi.head.state_dict())
    x = torch.rand(2, 3, *multi.input_size)
    t = torch.tensor([3, 7])
    assert torch.allclose(cheap(x, t), alone(x, t), atol=1e-6)
    assert cheap.all_maps(x, resolution="head").shape[-2:] == alone.features.feature_shapes()[0][1:]
    assert cheap.config()["aux_input_size"] == list(small) and cheap.config()["extra_aux_sizes"] == []
    assert torch.allclose(multi.with_aux_sizes([base[0], 48])(x, t), multi(x, t), atol=1e-6)
    with pytest.raises(ValueError, match="one size at least"):
        multi.with_aux_sizes([])


def test_multi_scale_at_the_training_size_changes_nothing(tiny_explainer):
    _random_head(tiny_explainer)
    x = torch.rand(2, 3, *tiny_explainer.input_size)
    single = tiny_explainer(x, [1, 2])
    tiny_explainer.extra_aux_sizes = [tuple(tiny_explainer.features.input_size)]
    assert torch.allclose(tiny_explainer(x, [1, 2]), single, atol=1e-6)


def test_multi_scale_sizes_round_trip_and_old_configs_load(tmp_path, tiny_backbone, tiny_aux):
    multi = PTameExplainer(tiny_backbone, tiny_aux, extra_aux_sizes=[(48, 64)])
    multi.save(tmp_path / "e")
    assert json.loads((tmp_path / "e" / "config.json").read_text())["extra_aux_sizes"] == [[48, 64]]
    assert load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux).extra_aux_sizes == [(48, 64)]
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    del cfg["extra_aux_sizes"]  # written before multi-scale existed
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    assert load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux).extra_aux_sizes == []


@pytest.mark.parametrize("bad", [[0], [(32, -1)], [(1, 2, 3)], ["64"]])
def test_bad_multi_scale_sizes_are_refused(tiny_backbone, tiny_aux, bad):
    with pytest.raises(ValueError, match="auxiliary size"):
        PTameExplainer(tiny_backbone, tiny_aux, extra_aux_sizes=bad)


def test_ship_reproduces_the_shipped_head_from_a_float32_save(tmp_path):
    from safetensors.torch import load_file

    from glancemap.cli import main
    from glancemap.explainer import DEFAULT_EXPLAINER_DIR

    trained = load_explainer("default")  # float32 in memory, as training leaves a head
    trained.save(tmp_path / "trained")
    assert load_file(str(tmp_path / "trained" / "head.safetensors"))["projection"].dtype == torch.float32
    assert main(["ship", str(tmp_path / "trained"), "--out", str(tmp_path / "shipped")]) == 0
    mine = load_file(str(tmp_path / "shipped" / "head.safetensors"))
    shipped = load_file(str(DEFAULT_EXPLAINER_DIR / "head.safetensors"))
    assert mine.keys() == shipped.keys()
    for key in shipped:  # float16 -> float32 -> float16 is exact: the same tensors, integer buffers untouched
        assert mine[key].dtype == shipped[key].dtype and torch.equal(mine[key], shipped[key]), key
    assert json.loads((tmp_path / "shipped" / "config.json").read_text()) == trained.config()
    shown = ["--negative-slope", "0.01", "--negative-at", "zero"]
    assert main(["ship", str(tmp_path / "trained"), "--out", str(tmp_path / "shown"), *shown]) == 0
    assert json.loads((tmp_path / "shown" / "config.json").read_text()) == trained.config() | {
        "negative_slope": 0.01,
        "negative_at": "zero",
    }
    assert load_explainer(tmp_path / "shown").negative_at == "zero"
    from glancemap.explainer import ship_explainer

    with pytest.raises(ValueError, match="negative_at"):
        ship_explainer(tmp_path / "trained", tmp_path / "bad", display={"negative_at": "floor"})
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    with pytest.raises(FileNotFoundError, match="not a glancemap explainer"):
        ship_explainer(tmp_path / "nothing", tmp_path / "x")


def test_recipe_of_an_explainer_trained_with_a_removed_fill_is_refused():
    from glancemap.training import training_recipe

    old = {"head": "shared", "training": {"loss_weights": {"destroy": 3.0, "destroy_fill": "blur"}}}
    assert training_recipe(old)["loss"] == {"destroy": 3.0}  # the blur is what the removal term still uses
    old["training"]["loss_weights"]["destroy_fill"] = "diffuse"
    with pytest.raises(ValueError, match="no longer has"):
        training_recipe(old)


def test_pixels_the_readout_scores_against_the_class_are_dimmed(tiny_backbone, tiny_aux):
    from glancemap.maps import minmax_normalize, resize_maps

    shown = PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=0.05)
    _random_head(shown)
    plain = shown.with_negative_slope(1.0)
    x = torch.rand(2, 3, *shown.input_size)
    t = torch.tensor([3, 7])
    with torch.no_grad():  # by hand: the start's CAM (readout on the last features) gates the trained map
        features = shown.features(x)
        cam = torch.einsum("bchw,bc->bhw", features[-1], shown.head.readout[t]).unsqueeze(1)
        maps = minmax_normalize(shown.head(features, t, per_sample=True))
        against = resize_maps(cam, maps.shape[-2:]) < 0
        expected = minmax_normalize(torch.where(against, 0.05 * maps, maps))
    ours = shown.all_maps(x, resolution="head")[torch.arange(2), t].unsqueeze(1)
    assert torch.allclose(ours, expected, atol=1e-5)
    base = plain.all_maps(x, resolution="head")[torch.arange(2), t].unsqueeze(1)
    assert 0.05 < against.float().mean() < 0.95  # the test means something: both kinds of pixel
    assert torch.allclose(base, maps, atol=1e-5)
    assert shown(x, t).shape == (2, 1, *shown.input_size)
    assert torch.allclose(shown.predict_and_explain(x, top_k=2)["maps"][:, :1], shown(x), atol=1e-5)


def test_pixels_below_the_heads_zero_are_dimmed_before_the_minmax(tiny_backbone, tiny_aux):
    from glancemap.maps import minmax_normalize

    shown = PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=0.01, negative_at="zero")
    shown.head.init_from_cam(shown.head.readout)  # the readout's CAM: both signs on random images
    with torch.no_grad():
        shown.head.offset.fill_(0.3)  # the zero is the logits' less the offset, not the min-max's
    plain = shown.with_negative_slope(1.0)
    x = torch.rand(2, 3, *shown.input_size)
    with torch.no_grad():
        every = shown.head(shown.features(x)) - 0.3  # (2,K,h,w): pick each image's most mixed-sign class
        t = ((every < 0).float().mean((2, 3)) - 0.5).abs().argmin(1)
        raw = shown.head(shown.features(x), t, per_sample=True) - 0.3
        expected = minmax_normalize(torch.where(raw < 0, 0.01 * raw, raw))
        ours = shown.all_maps(x, resolution="head")[torch.arange(2), t].unsqueeze(1)
        base = plain.all_maps(x, resolution="head")[torch.arange(2), t].unsqueeze(1)
    assert ((raw < 0).float().mean((1, 2, 3)) - 0.5).abs().max() < 0.45  # both kinds of pixel in each map
    assert torch.allclose(ours, expected, atol=1e-5)
    order = raw.flatten(1).argsort(1)  # the order of every pixel is the logits' own
    assert (ours.flatten(1).gather(1, order).diff(1) >= -1e-5).all()  # float rounding only
    assert not torch.allclose(ours, base, atol=1e-3)
    other = shown.with_negative_slope(0.01, "readout")
    assert other.negative_at == "readout" and shown.negative_at == "zero"
    with pytest.raises(ValueError, match="negative_at"):
        shown.with_negative_slope(0.01, "floor")


def test_class_gate_keeps_the_class_and_darkens_another_object():
    from glancemap.explainer.explainer import class_gate

    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :, :2] = 1.0  # the left half is class 0 to the readout, the right half class 1
    features[0, 1, :, 2:] = 1.0
    features[0, 0, 0, 0] = 1.5  # class 0's most likely pixel
    readout = 8.0 * torch.eye(2)
    gate = class_gate(features, readout, torch.tensor([0]), 2.0, (4, 4), per_sample=True)
    assert gate.shape == (1, 1, 4, 4)
    assert torch.equal(gate[..., :2], torch.ones(1, 1, 4, 2))  # within e^2 of the best pixel: kept
    assert gate[..., 2:].max() < 0.01  # the other class's object: darkened
    both = class_gate(features, readout, None, 2.0, (4, 4))
    assert both.shape == (1, 2, 4, 4) and torch.allclose(both[:, :1], gate)
    assert both[0, 1, :, 2:].min() == 1.0 and both[0, 1, :, :2].max() < 0.01
    assert torch.equal(class_gate(features, readout, None, 50.0, (4, 4)), torch.ones(1, 2, 4, 4))  # no darkening
    steeper = class_gate(features, readout, torch.tensor([0]), 0.0, (4, 4), per_sample=True)
    assert (steeper <= gate).all() and steeper[0, 0, 1, 1] < 1  # a smaller margin keeps less


def test_gated_maps_are_the_shown_maps_times_the_gate(tmp_path, tiny_backbone, tiny_aux):
    from glancemap.explainer.explainer import class_gate
    from glancemap.maps import minmax_normalize

    shown = PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=0.01, negative_at="zero")
    shown.head.readout.mul_(50.0)  # the random readout's per-pixel softmax is near uniform: give it some contrast
    gated = shown.with_gate(1.0)
    assert shown.gate_margin is None and gated.gate_margin == 1.0
    x, t = torch.rand(2, 3, *shown.input_size), torch.tensor([3, 7])
    with torch.no_grad():
        f = shown.features(x)
        expected = minmax_normalize(shown.map_logits(f, t, per_sample=True))
        expected = expected * class_gate(f[-1], shown.head.readout, t, 1.0, expected.shape[-2:], per_sample=True)
        assert torch.allclose(gated.map_logits(f, t, per_sample=True), expected, atol=1e-6)
    ours = gated(x, t)
    assert ours.shape == (2, 1, *shown.input_size) and 0 <= ours.min() and ours.max() <= 1
    assert (ours - shown(x, t)).abs().max() > 1e-3
    gated.save(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "config.json").read_text())["gate_margin"] == 1.0
    back = load_explainer(tmp_path / "g", backbone=tiny_backbone, auxiliary=tiny_aux)
    assert back.gate_margin == 1.0  # (its readout is rebuilt from the auxiliary, without the contrast above)
    for bad in (-1.0, float("inf"), "4"):
        with pytest.raises(ValueError, match="gate_margin"):
            shown.with_gate(bad)
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg | {"gate_margin": -2}))
    with pytest.raises(ValueError, match="gate_margin"):
        load_explainer(tmp_path / "g", backbone=tiny_backbone, auxiliary=tiny_aux)
    with pytest.raises(ValueError, match="shared head"):
        PTameExplainer(tiny_backbone, tiny_aux, head="per-class", gate_margin=4.0)


def test_negative_slope_needs_a_readout(tiny_backbone, tiny_aux):
    with pytest.raises(ValueError, match="shared head"):
        PTameExplainer(tiny_backbone, tiny_aux, head="per-class", negative_slope=0.05)


def test_negative_slope_round_trips_and_old_configs_show_plain_maps(tmp_path, tiny_backbone, tiny_aux):
    PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=0.2).save(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["negative_slope"] == 0.2
    assert load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux).negative_slope == 0.2
    del cfg["negative_slope"]  # written before the setting existed: the maps it was saved with
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    assert load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux).negative_slope == 1.0
    PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=0.01, negative_at="zero").save(tmp_path / "z")
    zero = load_explainer(tmp_path / "z", backbone=tiny_backbone, auxiliary=tiny_aux)
    assert (zero.negative_slope, zero.negative_at) == (0.01, "zero")
    assert load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux).negative_at == "readout"
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg | {"negative_slope": 0}))
    with pytest.raises(ValueError, match="negative_slope"):
        load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux)
    with pytest.raises(ValueError, match="negative_slope"):
        PTameExplainer(tiny_backbone, tiny_aux, head="shared", negative_slope=1.5)


def test_an_explainer_shown_or_run_otherwise_is_another_method_in_result_folders(tmp_path, tiny_backbone, tiny_aux):
    from glancemap.methods import explainer_identity

    PTameExplainer(tiny_backbone, tiny_aux, head="shared", extra_aux_sizes=[64]).save(tmp_path / "e")
    plain = load_explainer(tmp_path / "e", backbone=tiny_backbone, auxiliary=tiny_aux)
    base = explainer_identity(plain)
    assert set(base) == {"explainer_head_sha256", "extra_aux_sizes"}  # what older result folders hold
    variants = [
        plain.with_negative_slope(0.01),
        plain.with_negative_slope(0.01, "zero"),
        plain.with_aux_sizes([48, 64]),
        plain.with_aux_sizes([plain.aux_sizes[0]]),
    ]
    identities = [base] + [explainer_identity(v) for v in variants]
    assert len({json.dumps(i, sort_keys=True) for i in identities}) == len(identities)
    assert explainer_identity(plain.with_aux_sizes(plain.aux_sizes)) == base
