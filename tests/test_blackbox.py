"""Backbones you can only call: a Python function, or an ONNX file run by ONNX Runtime."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glancemap import PTameExplainer, load_classifier
from glancemap.evaluation import MetricConfig, score_batch
from glancemap.methods import MethodContext, create_method
from glancemap.models import callable_classifier, export_classifier_onnx

from .conftest import TINY_AUX, TINY_BACKBONE
from .test_training import _config


def _numpy_backbone(outputs="logits"):
    """Three classes from the mean of each colour channel, in numpy: nothing for autograd to follow."""

    def fn(x: np.ndarray) -> np.ndarray:
        logits = 8 * x.mean(axis=(2, 3))
        if outputs == "logits":
            return logits
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return callable_classifier(fn, name="rgb", input_size=16, num_classes=3, outputs=outputs, fingerprint="rgb-v1")


def test_a_callable_scores_the_same_as_logits_or_probabilities():
    x = torch.rand(4, 3, 16, 16)
    logits, probs = _numpy_backbone("logits"), _numpy_backbone("probabilities")
    assert torch.allclose(logits(x).softmax(1), probs(x).softmax(1), atol=1e-6)
    assert not logits.differentiable and logits.fingerprint() == "rgb-v1"


def test_a_callable_returning_nan_or_negative_probabilities_is_refused_by_name():
    x = torch.rand(3, 3, 16, 16)
    nan = callable_classifier(lambda a: np.where(np.arange(3)[:, None] == 1, np.nan, 1.0) * np.ones((3, 2)),
                              name="nan", input_size=16, num_classes=2)  # fmt: skip
    with pytest.raises(ValueError, match="NaN or infinite logits for 1 of 3 images.*image 1 of the batch"):
        nan(x)
    negative = callable_classifier(lambda a: -np.ones((len(a), 2)), name="neg", input_size=16, num_classes=2,
                                   outputs="probabilities")  # fmt: skip
    with pytest.raises(ValueError, match="negative probabilities"):
        negative(x)


def test_metrics_and_output_only_methods_run_on_a_callable(tmp_path):
    bb = _numpy_backbone()
    x = torch.rand(4, 3, 16, 16)
    config = MetricConfig(road_fractions=(0.3, 0.6), deletion_steps=2)
    for name in ("rise", "gaussian", "random"):
        method = create_method(name, MethodContext(bb, options={"rise_masks": 16}))
        records = score_batch(bb, method, x, config)
        assert len(records) == 4 and all(np.isfinite(r["ROAD LeRF-MoRF"]) for r in records)
    for name in ("gradcam", "scorecam", "opticam"):
        with pytest.raises(ValueError, match="black box you can only call"):
            create_method(name, MethodContext(bb))


def test_onnx_backbone_matches_pytorch_and_explainer_maps_run_on_it(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    torch_bb = load_classifier(TINY_BACKBONE, "random")
    path = export_classifier_onnx(torch_bb, tmp_path / "bb.onnx")
    onnx_bb = load_classifier(f"onnx:{path}")
    x = torch.rand(3, 3, *torch_bb.input_size)
    assert (onnx_bb(x) - torch_bb(x)).abs().max() < 1e-4
    assert onnx_bb.input_size == torch_bb.input_size and onnx_bb.class_names == torch_bb.class_names
    # a trained explainer's maps never run the backbone: they work the same over the black box
    explainer = PTameExplainer(onnx_bb, load_classifier(TINY_AUX, "random"))
    t = onnx_bb.predict(x)[0]
    assert torch.equal(t, torch_bb.predict(x)[0])
    assert explainer(x).shape == (3, 1, *torch_bb.input_size)
    with pytest.raises(ValueError, match="do not pass weights"):
        load_classifier(f"onnx:{path}", "random")


def test_plan_calls_spends_the_budget_on_targets_then_queries():
    from glancemap.training.surrogate import plan_calls

    plan = plan_calls(images=100, steps=50, batch_size=10, budget_per_image=20, spent=300, queried_per_step=2)
    # 2000 calls - 300 spent = 1700: 50 steps of targets (500) leave 1200 = 60 query batches, so every step
    assert (plan.steps, plan.query_every) == (50, 1) and plan.expected_calls == 300 + 500 + 50 * 20
    # 1400 - 300 - 500 leave 600 = 30 query batches for 50 steps: every other step (25 of them)
    tight = plan_calls(images=100, steps=50, batch_size=10, budget_per_image=14, spent=300, queried_per_step=2)
    assert (tight.steps, tight.query_every) == (50, 2) and tight.expected_calls == 300 + 500 + 25 * 20
    assert [tight.queries(s) for s in range(4)] == [True, False, True, False]
    cut = plan_calls(images=100, steps=50, batch_size=10, budget_per_image=4, spent=0, queried_per_step=1)
    assert cut.steps == 40 and cut.query_every == 0  # the targets alone use the budget: fewer steps, no queries
    with pytest.raises(ValueError, match="Raise --call-budget"):
        plan_calls(images=10, steps=5, batch_size=10, budget_per_image=1, spent=5, queried_per_step=1)


def test_the_surrogate_learns_a_black_box_it_can_represent():
    """A black box that is a linear readout of the auxiliary's own pooled features: after queries and a
    refit the surrogate agrees with it on images it has not seen, from a start that does not."""
    from glancemap.models import FeatureExtractor, default_layers
    from glancemap.training.readout import Readout
    from glancemap.training.surrogate import Surrogate

    aux = load_classifier(TINY_AUX, "random")
    features = FeatureExtractor(aux, default_layers(aux), (32, 32))
    d = features.feature_shapes()[-1][0]
    g = torch.Generator().manual_seed(0)
    secret = torch.randn(4, d, generator=g)
    images = torch.rand(320, 3, 32, 32, generator=g) ** 2
    with torch.no_grad():
        pooled = features(images)[-1].mean(dim=(2, 3))
    mu, sd = pooled.mean(0), pooled.std(0) + 1e-6  # standardised: random-init features vary little

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            f = features(torch.from_numpy(x))[-1].mean(dim=(2, 3))
        return (((f - mu) / sd) @ secret.T).numpy()  # linear in the pooled features, plus a bias

    box = callable_classifier(fn, name="secret", input_size=32, num_classes=4)
    surrogate = Surrogate(box, features, Readout(torch.randn(4, d, generator=g), torch.zeros(4), ridge=1e-4))
    for batch in images[:256].split(32):
        surrogate.query(batch)
    assert box.model.calls == 256
    before = surrogate.agreement_since_refit()
    surrogate.refit()
    for batch in images[256:].split(32):
        surrogate.query(batch)
    after = surrogate.agreement_since_refit()
    print(f"surrogate top-1 agreement on unseen images: {before:.2f} before the refit, {after:.2f} after")
    assert after > 0.65 and after > before + 0.3  # 0.77 vs 0.20 when written
    x = images[:2].clone().requires_grad_(True)
    surrogate(x)[:, 0].sum().backward()  # differentiable with respect to the images
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_refit_keeps_a_start_that_already_agrees_with_the_black_box():
    """The black box is the surrogate's own start: its refit, however strong the ridge, stays there (a
    ridge pulling towards zero weights shrank the auxiliary's own classifier and cut its agreement)."""
    from glancemap.models import FeatureExtractor, default_layers
    from glancemap.training.readout import Readout
    from glancemap.training.surrogate import Surrogate

    aux = load_classifier(TINY_AUX, "random")
    features = FeatureExtractor(aux, default_layers(aux), (32, 32))
    d = features.feature_shapes()[-1][0]
    g = torch.Generator().manual_seed(1)
    start = Readout(torch.randn(4, d, generator=g), torch.randn(4, generator=g), ridge=1.0)

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (features(torch.from_numpy(x))[-1].mean(dim=(2, 3)) @ start.weight.T + start.bias).numpy()

    surrogate = Surrogate(callable_classifier(fn, name="start", input_size=32, num_classes=4), features, start)
    surrogate.query(torch.rand(32, 3, 32, 32, generator=g))
    surrogate.refit()
    assert surrogate.refits == 1
    assert (surrogate.weight - start.weight).norm() < 0.01 * start.weight.norm()
    assert (surrogate.bias - start.bias).abs().max() < 0.01


def test_a_black_box_backbone_trains_gradient_free_within_its_call_budget(tmp_path, image_folder, capsys, monkeypatch):
    import glancemap.training.trainer as trainer
    from glancemap import load_explainer, register_classifier
    from glancemap.training import train

    monkeypatch.setattr(trainer, "REFIT_EVERY", 2)  # refits within the six steps

    register_classifier("numpy_rgb", lambda weights: _numpy_backbone())
    cfg = _config(tmp_path, image_folder, backbone="numpy_rgb", backbone_weights=None, epochs=2, call_budget=30)
    explainer = train(cfg, progress_bar=False)
    err = capsys.readouterr().err
    assert "gradient-free training through a surrogate" in err and "readout distilled from the backbone" in err
    info = explainer.training_info
    images = info["images"]
    assert 0 < info["black_box_calls"] <= 30 * images and info["steps"] == 6 and info["surrogate_refits"] >= 1
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log) and any("surrogate_agreement" in r for r in log)
    assert log[-1]["black_box_calls"] == info["black_box_calls"]
    start = load_explainer(tmp_path / "run" / "explainer", backbone=load_classifier("numpy_rgb"))
    x = torch.rand(2, 3, 16, 16)
    assert start(x).shape == (2, 1, 16, 16)
    # resumable like any run: the surrogate's readout is in the checkpoint
    ckpt = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))
    assert ckpt["surrogate.weight"].shape[0] == 3
    # evaluate's default methods on it: those that read the backbone's layers are left out and named,
    # the rest (the auxiliary CAM through the distilled readout included) are scored
    from glancemap.evaluation import evaluate

    logged: list[str] = []
    out = evaluate([str(image_folder)], tmp_path / "eval", explainer=tmp_path / "run" / "explainer", limit=2,
                   metrics=MetricConfig(road_fractions=(0.5,), deletion_steps=0), progress=False,
                   log=logged.append)  # fmt: skip
    left_out = {line.split()[2].rstrip(",") for line in logged if line.startswith("leaving out")}
    assert left_out == {"gradcam", "gradcam++", "layercam", "eigencam"}
    scored = {json.loads(line)["method"] for line in (out / "results.jsonl").read_text().splitlines()}
    assert scored == {"ptame", "auxcam", "gaussian", "random"}
    with pytest.raises(ValueError, match="black box you can only call"):  # named by the user: refused
        evaluate([str(image_folder)], tmp_path / "eval2", "ptame,gradcam", explainer=tmp_path / "run" / "explainer")
    assert not (tmp_path / "eval2").exists()


def _counted_black_box(name: str, sent: list[int]) -> None:
    """Registers ``name``: three classes the auxiliary lacks (so a readout is distilled and a held-out
    check runs), counting in ``sent`` every image the function is really given."""
    from glancemap import register_classifier

    def fn(x: np.ndarray) -> np.ndarray:
        sent.append(len(x))
        return 8 * x.mean(axis=(2, 3))

    register_classifier(name, lambda weights: callable_classifier(fn, name=name, input_size=16, num_classes=3))


def _start_wins(monkeypatch) -> None:
    """The held-out check runs for real (its calls are made) and the start wins: the start is rebuilt."""
    import glancemap.training.trainer as trainer
    from glancemap.training.selection import held_out_score as real

    order = iter([0.1, 0.5])  # the trained head is scored first
    monkeypatch.setattr(trainer, "held_out_score", lambda explainer, files: (real(explainer, files), next(order))[1])


@pytest.mark.parametrize("winner", ["start", "trained"])
def test_the_call_budget_covers_the_held_out_check_and_the_rebuilt_start(tmp_path, monkeypatch, winner):
    from glancemap.training import train

    from .conftest import write_images

    write_images(tmp_path / "images", 60)
    sent: list[int] = []
    _counted_black_box("counted_rgb", sent)
    if winner == "start":
        _start_wins(monkeypatch)
    cfg = _config(tmp_path, tmp_path / "images", backbone="counted_rgb", backbone_weights=None, epochs=None,
                  max_steps=40, call_budget=22)  # fmt: skip
    info = train(cfg, progress_bar=False).training_info
    assert info["held_out"]["images"] == 9 and info["held_out"]["kept"] == winner
    assert info["held_out"].get("rebuilt_on") == (60 if winner == "start" else None)
    assert info["black_box_calls"] == sum(sent) <= 22 * 60  # every call counted, the budget kept
    with pytest.raises(ValueError, match="kept for checking the start on held-out images.*Raise --call-budget"):
        train(dataclasses.replace(cfg, call_budget=12), progress_bar=False, overwrite=True)


@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_a_resumed_black_box_run_counts_every_call_and_repeats_none_of_its_setup(tmp_path, monkeypatch, stop):
    from glancemap.training import train

    from .conftest import write_images
    from .test_training import Killed, interrupted_run

    write_images(tmp_path / "images", 60)
    sent: list[int] = []
    _counted_black_box("counted_rgb2", sent)
    _start_wins(monkeypatch)
    cfg = _config(tmp_path, tmp_path / "images", backbone="counted_rgb2", backbone_weights=None, epochs=None,
                  max_steps=40, call_budget=22, checkpoint_every=4)  # fmt: skip
    whole = train(dataclasses.replace(cfg, out=str(tmp_path / "whole")), progress_bar=False).training_info
    assert whole["black_box_calls"] == sum(sent)
    setup = 51 * 8 + 4  # the first session distils a readout (51 images x 8 views), calibrates on 4
    _start_wins(monkeypatch)
    sent.clear()
    # stopped in its 8th step: Ctrl-C saves step 7; a kill leaves the step-4 checkpoint, steps 5-7 are repeated
    interrupted_run(monkeypatch, cfg, after_steps=7, stop=KeyboardInterrupt if stop == "ctrl-c" else Killed)
    first = sum(sent)
    sent.clear()
    resumed = train(cfg, resume=True, progress_bar=False).training_info
    assert resumed["black_box_calls"] == first + sum(sent) <= 22 * 60  # both sessions counted, within the budget
    # the resumed session spends only steps, the held-out check and the rebuilt start: no second distillation
    assert sum(sent) == resumed["black_box_calls"] - first and first > setup
    if stop == "ctrl-c":  # nothing repeated: the calls of one uninterrupted run
        assert resumed["black_box_calls"] == whole["black_box_calls"] and resumed["steps"] == 40
    else:  # steps 5-7 repeated, with the query of step 5 (2 batches of 4) they would overspend the budget:
        assert whole["black_box_calls"] + 3 * 4 + 2 * 4 > 22 * 60
        assert resumed["black_box_calls"] == whole["black_box_calls"] + 3 * 4  # the guard dropped one query
