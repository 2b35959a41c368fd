"""Exported explainers: one ONNX file that ONNX Runtime runs to the same maps as PyTorch."""

import json

import pytest
import torch

from glancemap import PTameExplainer, load_classifier, load_explainer
from glancemap.cli import main

from .conftest import TINY_AUX, TINY_BACKBONE, write_images

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
TOLERANCE = 1e-4  # max abs difference between ONNX Runtime's maps and PyTorch's


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A multi-scale explainer of freshly loaded networks, showing evidence against the class near
    zero, saved and exported both ways."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(4)
    explainer = PTameExplainer(
        load_classifier(TINY_BACKBONE, "random"),
        load_classifier(TINY_AUX, "random"),
        extra_aux_sizes=[64],
        head="shared",
        negative_slope=0.05,
    )
    with torch.no_grad():
        for p in explainer.head.parameters():
            p.add_(0.05 * torch.randn_like(p))  # not the start: a head with weights of its own
    explainer.save(root / "expl")
    assert main(["export", str(root / "expl"), "--out", str(root / "maps.onnx")]) == 0
    assert main(["export", str(root / "expl"), "--out", str(root / "all.onnx"), "--all-maps"]) == 0
    return root, load_explainer(root / "expl")


def test_onnx_maps_match_pytorch(saved):
    root, explainer = saved
    onnx = load_explainer(root / "maps.onnx")
    x = torch.rand(3, 3, *explainer.input_size)  # exported with a batch of 2: the batch is dynamic
    t = torch.tensor([5, 17, 999])
    assert (onnx(x, t) - explainer(x, t)).abs().max() < TOLERANCE
    assert (onnx(x) - explainer(x)).abs().max() < TOLERANCE  # the backbone's top-1, picked in PyTorch
    mine, theirs = onnx.predict_and_explain(x, top_k=2), explainer.predict_and_explain(x, top_k=2)
    assert torch.equal(mine["classes"], theirs["classes"])
    assert (mine["maps"] - theirs["maps"]).abs().max() < TOLERANCE
    with pytest.raises(ValueError, match="targets must be in"):
        onnx(x, [0, 1, 5000])


def test_onnx_maps_at_the_heads_zero_match_pytorch(saved, tmp_path):
    root, explainer = saved
    zero = explainer.with_negative_slope(0.05, "zero")
    zero.save(tmp_path / "zero")
    assert main(["export", str(tmp_path / "zero"), "--out", str(tmp_path / "zero.onnx")]) == 0
    onnx = load_explainer(tmp_path / "zero.onnx")
    x, t = torch.rand(2, 3, *explainer.input_size), torch.tensor([5, 17])
    assert (onnx(x, t) - zero(x, t)).abs().max() < TOLERANCE
    assert (zero(x, t) - explainer(x, t)).abs().max() > 1e-3  # another display than the readout's gate
    assert onnx.with_negative_slope(0.05, "zero") is onnx
    with pytest.raises(ValueError, match="export it again"):
        onnx.with_negative_slope(0.05, "readout")


@pytest.mark.parametrize("variant", ["maps", "all"])
def test_onnx_maps_with_the_class_gate_match_pytorch(saved, tmp_path, variant):
    from glancemap.explainer.onnx import export_onnx

    root, _ = saved
    explainer = load_explainer(root / "expl")  # its own copy: the readout is changed below
    explainer.head.readout.mul_(50.0)  # the random readout's per-pixel softmax is near uniform: give it contrast
    gated = explainer.with_negative_slope(0.05, "zero").with_gate(1.0)
    onnx = load_explainer(export_onnx(gated, tmp_path / "g.onnx", variant))
    x, t = torch.rand(2, 3, *explainer.input_size), torch.tensor([5, 17])
    if variant == "maps":
        ours, plain = onnx(x, t), gated.with_gate(None)(x, t)
        assert (ours - gated(x, t)).abs().max() < TOLERANCE
    else:
        ours, plain = onnx.all_maps(x), gated.with_gate(None).all_maps(x, resolution="head")
        assert (ours - gated.all_maps(x, resolution="head")).abs().max() < TOLERANCE
    assert (ours - plain).abs().max() > 1e-3  # the gate is in the file
    assert onnx.with_gate(1.0) is onnx
    with pytest.raises(ValueError, match="export it again"):
        onnx.with_gate(None)


def test_onnx_all_maps_match_pytorch(saved):
    root, explainer = saved
    onnx = load_explainer(root / "all.onnx")
    x = torch.rand(1, 3, *explainer.input_size)
    expected = explainer.all_maps(x, resolution="head")
    assert onnx.all_maps(x).shape == expected.shape
    assert (onnx.all_maps(x) - expected).abs().max() < TOLERANCE
    with pytest.raises(ValueError, match="variant 'all'"):
        onnx(x, [1])


def test_explain_and_evaluate_take_the_onnx_file(saved, tmp_path):
    root, explainer = saved
    images = tmp_path / "images"
    write_images(images, 3)
    out = tmp_path / "maps"
    assert (
        main(["explain", str(images), "--explainer", str(root / "maps.onnx"), "--out", str(out), "--top-k", "2"]) == 0
    )
    assert len(json.loads((out / "summary.json").read_text())["explained"]) == 3
    ev = tmp_path / "ev"
    args = ["evaluate", "--data", str(images), "--explainer", str(root / "maps.onnx"), "--out", str(ev),
            "--methods", "ptame,auxcam", "--deletion-steps", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    run = json.loads((ev / "run.json").read_text())
    assert "explainer_onnx_sha256" in run["methods"]["ptame"]
    assert "P-TAME" in (ev / "table.md").read_text()


def test_a_file_that_is_not_an_exported_explainer_is_refused(tmp_path, saved):
    import onnx

    root, _ = saved
    model = onnx.load(str(root / "maps.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not an explainer exported by glancemap"):
        load_explainer(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read .*junk.onnx"):
        load_explainer(tmp_path / "junk.onnx")


def test_export_at_other_aux_sides_matches_pytorch_at_those_sides(saved, tmp_path):
    root, explainer = saved
    side = explainer.features.input_size[0] // 2
    assert main(["export", str(root / "expl"), "--out", str(tmp_path / "cheap.onnx"), "--aux-sides", str(side)]) == 0
    onnx = load_explainer(tmp_path / "cheap.onnx")
    cheap = explainer.with_aux_sizes([side])
    assert onnx.aux_sizes == [(side, side)] == cheap.aux_sizes
    x = torch.rand(2, 3, *explainer.input_size)
    t = torch.tensor([3, 40])
    assert (onnx(x, t) - cheap(x, t)).abs().max() < TOLERANCE
    assert (onnx(x, t) - explainer(x, t)).abs().max() > 10 * TOLERANCE  # not the file of the full explainer
    assert onnx.with_aux_sizes([side]) is onnx
    with pytest.raises(ValueError, match="export it again"):
        onnx.with_aux_sizes(explainer.aux_sizes)
