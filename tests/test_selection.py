"""The held-out check that keeps the start when training did not improve on it."""

import dataclasses
import json

import pytest
import torch

from glancemap import Classifier
from glancemap.training import train
from glancemap.training.selection import holdout_split, removal_score

from .conftest import write_images
from .test_training import _config


class _LeftHalf(torch.nn.Module):
    """Class 0 when the left half is bright and detailed: its evidence sits in a known place."""

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2]
        detail = (left[..., 1:, :] - left[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return torch.stack([detail * 80, torch.full_like(detail, 2.0)], dim=1)


class _FixedMaps:
    def __init__(self, backbone, side):
        self.backbone, self.side = backbone, side

    def __call__(self, images, targets):
        maps = torch.zeros(images.shape[0], 1, *images.shape[-2:])
        half = images.shape[-1] // 2
        if self.side == "left":
            maps[..., :half] = 1.0
        else:
            maps[..., half:] = 1.0
        return maps + torch.linspace(0, 0.01, images.shape[-1])  # a gentle ramp orders the pixels


def test_removal_score_prefers_the_map_on_the_evidence():
    backbone = Classifier(_LeftHalf(), name="left", input_size=32, num_classes=2)
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (backbone(images).argmax(1) == 0).all()
    right, wrong = (
        removal_score(_FixedMaps(backbone, "left"), images),
        removal_score(_FixedMaps(backbone, "right"), images),
    )
    assert (right > wrong).all() and right.mean() > 0 > wrong.mean()


def test_holdout_split_is_seeded_and_skips_small_sets(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(40)]
    train_files, held = holdout_split(files, 0.25, seed=1)
    assert len(held) == 10 and set(held).isdisjoint(train_files) and len(train_files) == 30
    assert holdout_split(files, 0.25, seed=1) == (train_files, held)
    assert holdout_split(files, 0.25, seed=2)[1] != held
    assert holdout_split(files[:20], 0.25, seed=1)[1] == []  # 5 held out: too few to judge by
    assert holdout_split(files, 0.0, seed=1) == (files, [])


@pytest.mark.parametrize("winner", ["start", "trained"])
def test_the_better_head_on_held_out_images_is_saved(tmp_path, monkeypatch, winner):
    import glancemap.training.trainer as trainer

    images = tmp_path / "images"
    write_images(images, 24)
    scores = iter([0.1, 0.5] if winner == "start" else [0.5, 0.1])  # the trained head is scored first
    seen = []

    def fake_score(explainer, files):
        seen.append({k: v.clone() for k, v in explainer.head.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(trainer, "held_out_score", fake_score)
    saved = train(_config(tmp_path, images, holdout=0.4, max_steps=3), progress_bar=False)
    record = json.loads((tmp_path / "run" / "explainer" / "config.json").read_text())["training"]
    assert record["held_out"]["kept"] == winner and record["held_out"]["images"] == 10
    assert record["images"] == 14  # trained on the rest
    trained, start = seen
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # three steps moved the head
    if winner == "trained":
        assert all(torch.equal(v, trained[k]) for k, v in saved.head.state_dict().items())
        return
    # the kept start is rebuilt on all 24 images: the start `--max-steps 0` makes, not the 14-image one
    assert record["held_out"]["rebuilt_on"] == 24
    whole = train(_config(tmp_path / "zero", images, max_steps=0), progress_bar=False)
    # the same head, weight for weight: the residual blocks' convolutions, drawn at random behind zero BN
    # scales, are drawn as that run draws them, so a fine-tune from either starts alike
    ours, theirs = saved.head.state_dict(), whole.head.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(v, theirs[k]) for k, v in ours.items())
    assert not torch.equal(ours["projection"], start["projection"])  # calibrated on 24 images, not 14
    x = torch.rand(3, 3, *saved.backbone.input_size, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 5, 9])
    assert torch.equal(saved.eval()(x, classes), whole.eval()(x, classes))


def test_a_resumed_run_checks_against_the_start_it_began_from(tmp_path, monkeypatch):
    import glancemap.training.trainer as trainer

    from .test_training import interrupted_run

    images = tmp_path / "images"
    write_images(images, 24)
    starts = []

    def fake_score(explainer, files):
        starts.append({k: v.clone() for k, v in explainer.head.state_dict().items()})
        return 0.0

    monkeypatch.setattr(trainer, "held_out_score", fake_score)
    cfg = _config(tmp_path, images, holdout=0.4, epochs=2, max_steps=4, checkpoint_every=2)
    train(dataclasses.replace(cfg, out=str(tmp_path / "whole")), progress_bar=False)
    interrupted_run(monkeypatch, cfg, after_steps=3)  # killed after the step-2 checkpoint
    monkeypatch.setattr(trainer, "held_out_score", fake_score)
    built = []
    real_build = trainer.build_explainer

    def build(config, device, calibration_files=None, **kw):
        built.append(calibration_files)
        return real_build(config, device, calibration_files, **kw)

    monkeypatch.setattr(trainer, "build_explainer", build)
    train(cfg, resume=True, progress_bar=False)
    assert built == [None]  # neither distilled nor calibrated again: the checkpoint holds the start
    whole_start, resumed_start = starts[1], starts[3]  # each run scores its trained head, then its start
    assert whole_start.keys() == resumed_start.keys()
    assert all(torch.equal(whole_start[k], resumed_start[k]) for k in whole_start)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ConnectionError])  # Ctrl-C, or a black box's failed call
def test_a_stopped_run_keeps_the_steps_done_since_the_last_checkpoint(
    tmp_path, image_folder, monkeypatch, capsys, stop
):
    from .test_training import _log, interrupted_run

    cfg = _config(tmp_path, image_folder, epochs=3, checkpoint_every=5)
    interrupted_run(monkeypatch, cfg, after_steps=2, stop=stop)
    assert "stopped at step 2: checkpoint saved" in capsys.readouterr().err
    from glancemap.training.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")[1]["progress"]["step"] == 2
    train(cfg, resume=True, progress_bar=False)
    assert "checkpoint.safetensors at step 2/9" in capsys.readouterr().err
    assert [r["step"] for r in _log(tmp_path / "run")] == list(range(1, 10))  # steps 1-2 not trained twice
