import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glancemap.images import list_images
from glancemap.training import TrainConfig, TrainingDivergedError, load_checkpoint, train

from .conftest import TINY_AUX, TINY_BACKBONE, write_images

TINY = [
    "--backbone",
    TINY_BACKBONE,
    "--backbone-weights",
    "random",
    "--auxiliary",
    TINY_AUX,
    "--auxiliary-weights",
    "random",
    "--no-progress",
    "--workers",
    "0",
]


def _config(tmp_path, images, **kw) -> TrainConfig:
    base = dict(
        data=[str(images)],
        out=str(tmp_path / "run"),
        backbone=TINY_BACKBONE,
        backbone_weights="random",
        auxiliary=TINY_AUX,
        auxiliary_weights="random",
        batch_size=4,
        epochs=1,
        workers=0,
        checkpoint_every=2,
    )
    base.update(kw)
    return TrainConfig(**base)


class Killed(BaseException):
    """A kill -9 as the training loop sees it: nothing it may catch (neither Exception nor Ctrl-C)."""


def interrupted_run(monkeypatch, config: TrainConfig, after_steps: int, stop: type[BaseException] = Killed) -> None:
    """Trains ``config`` until ``after_steps`` steps are done, then stops it with ``stop`` raised in the
    next step: by default as a kill would (no chance to save), or as Ctrl-C or a failing black box."""
    import glancemap.training.trainer as trainer

    real_step, calls = trainer.training_step, []

    def stopping(*args):
        calls.append(1)
        if len(calls) > after_steps:
            raise stop(f"stopped after step {after_steps}")
        return real_step(*args)

    monkeypatch.setattr(trainer, "training_step", stopping)
    with pytest.raises(stop):
        train(config, progress_bar=False)
    monkeypatch.setattr(trainer, "training_step", real_step)


def _log(out: Path) -> list[dict]:
    path = out / "train_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_short_run_saves_explainer_and_checkpoint(tmp_path, image_folder):
    explainer = train(_config(tmp_path, image_folder, epochs=2), progress_bar=False)
    out = tmp_path / "run"
    assert (out / "explainer" / "head.safetensors").is_file()
    _, meta = load_checkpoint(out / "checkpoint.safetensors")
    assert meta["progress"]["step"] == 6  # 12 images / batch 4 x 2 epochs
    steps = _log(out)
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert {"ce", "area", "tv", "loss"} <= set(steps[0])
    assert all(s["step_s"] > 0 for s in steps)  # each step's wall time, for step-time figures
    assert explainer.training_info["images"] == 12


def test_loading_workers_serve_every_epoch_in_its_own_order(tmp_path, image_folder, monkeypatch):
    # the loader and its worker process live across epochs; each epoch must still draw its own
    # shuffle of every image (the sampler is read in the training process at the epoch's start)
    import glancemap.training.trainer as trainer

    orders: list[list[int]] = []
    real_iter = trainer.ResumableDistributedSampler.__iter__

    def recorded(self):
        order = list(real_iter(self))
        orders.append(order)
        return iter(order)

    monkeypatch.setattr(trainer.ResumableDistributedSampler, "__iter__", recorded)
    train(_config(tmp_path, image_folder, epochs=3, batch_size=6, workers=1), progress_bar=False)
    assert [s["step"] for s in _log(tmp_path / "run")] == list(range(1, 7))  # 12 images / 6 x 3 epochs
    assert len(orders) == 3 and all(sorted(o) == list(range(12)) for o in orders)
    assert len({tuple(o) for o in orders}) == 3


def test_only_the_head_learns(tmp_path, image_folder):
    cfg = _config(tmp_path, image_folder, max_steps=2)
    explainer = train(cfg, progress_bar=False)
    from glancemap.training import build_explainer

    torch.manual_seed(0)
    fresh = build_explainer(cfg, torch.device("cpu"))
    for a, b in zip(explainer.backbone.state_dict().values(), fresh.backbone.state_dict().values()):
        assert torch.equal(a, b) or a.dtype == torch.long


def test_nan_loss_stops_with_clear_error(tmp_path, image_folder, monkeypatch):
    import glancemap.training.trainer as trainer

    real = trainer.PTameLoss

    class PoisonedLoss(real):
        calls = 0

        def __call__(self, *args):
            PoisonedLoss.calls += 1
            total, terms = super().__call__(*args)
            return (total * float("nan") if PoisonedLoss.calls == 3 else total), terms

    monkeypatch.setattr(trainer, "PTameLoss", PoisonedLoss)
    # the third step's loss is NaN: numbered from 1, as in the log
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 3 .*last checkpoint is .*step 2, loss"):
        train(_config(tmp_path, image_folder, epochs=3), progress_bar=False)
    # the last checkpoint is the good one from step 2, with its loss and weights recorded finite
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["progress"]["step"] == 2
    assert math.isfinite(meta["progress"]["loss"]) and math.isfinite(meta["progress"]["max_abs_weight"])
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]


def test_resume_refuses_other_settings(tmp_path, image_folder):
    train(_config(tmp_path, image_folder, max_steps=2), progress_bar=False)
    with pytest.raises(ValueError, match="other settings.*batch_size"):
        train(_config(tmp_path, image_folder, max_steps=4, batch_size=2), resume=True, progress_bar=False)


def test_resume_may_lower_the_learning_rate_and_logs_it(tmp_path, image_folder, monkeypatch):
    """The advice after a divergence (resume with a lower --lr) must be possible."""
    interrupted_run(monkeypatch, _config(tmp_path, image_folder, epochs=2, lr=1e-4), after_steps=2)
    explainer = train(_config(tmp_path, image_folder, epochs=2, lr=1e-5), resume=True, progress_bar=False)
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log if "event" not in r] == [1, 2, 3, 4, 5, 6]
    (event,) = [r for r in log if r.get("event") == "resume"]
    assert event["step"] == 2 and event["changed"] == {"lr": [1e-4, 1e-5]}
    # the one-cycle schedule goes on at a tenth of the rate it had: every later step is below the new peak
    assert max(r["lr"] for r in log if r["step"] > 2 and "event" not in r) <= 1e-5 + 1e-12
    assert explainer.training_info["lr"] == 1e-5


@pytest.mark.slow
def test_kill_9_then_resume_loses_at_most_n_steps(tmp_path):
    images = tmp_path / "images"
    write_images(images, 12)
    out = tmp_path / "run"
    every = 3
    cmd = [
        sys.executable,
        "-m",
        "glancemap.cli",
        "train",
        str(images),
        "--out",
        str(out),
        "--epochs",
        "50",
        "--batch-size",
        "2",
        "--checkpoint-every",
        str(every),
        *TINY,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = _log(out)
        if log and log[-1]["step"] >= 8 and (out / "checkpoint.safetensors").exists():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _log(out)[-1]["step"]
    _, meta = load_checkpoint(out / "checkpoint.safetensors")  # never half-written
    saved = meta["progress"]["step"]
    assert saved % every == 0 and 0 <= done - saved <= every
    resumed = subprocess.run(
        cmd + ["--resume", "--max-steps", str(saved + 4)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoint.safetensors'} at step {saved}" in resumed.stderr
    steps = [s["step"] for s in _log(out)]
    assert steps == list(range(1, saved + 5))  # the steps redone after the checkpoint are logged once
    cfg = json.loads((out / "explainer" / "config.json").read_text())
    assert cfg["training"]["steps"] == saved + 4


def test_trim_log_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    import glancemap.training.checkpoint as checkpoint

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    assert checkpoint.trim_log(log, 5) == 3
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert checkpoint.trim_log(log, 5) == 0
    assert checkpoint.trim_log(tmp_path / "missing.jsonl", 5) == 0


@pytest.mark.slow
@pytest.mark.parametrize("holdout", ["0", "0.5"])
def test_two_process_ddp_ends_with_identical_heads(tmp_path, holdout):
    images = tmp_path / "images"
    write_images(images, 16)
    out = tmp_path / "ddp"
    worker = Path(__file__).with_name("ddp_worker.py")
    flags = [f for f in TINY if f != "--no-progress"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
        str(images),
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--max-steps",
        "5",
        "--device",
        "cpu",
        "--holdout",
        holdout,  # 0.5: 8 images held out, and each process checks the trained head against its start
        *flags,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    a = load_file(str(out / "rank0_head.safetensors"))
    b = load_file(str(out / "rank1_head.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cfg = json.loads((out / "explainer" / "config.json").read_text())
    # 2 epochs of 16 (or 8, the rest held out) images in steps of 2 per process, at most 5
    assert cfg["training"]["world_size"] == 2 and cfg["training"]["steps"] == (5 if holdout == "0" else 4)
    assert run.stderr.count("glancemap: start:") == 1  # reported once, not once per process
    if holdout != "0":
        assert cfg["training"]["held_out"]["images"] == 8 and cfg["training"]["images"] == 8


def test_fine_tune_with_removal_term_starts_from_saved_head(tmp_path, image_folder, monkeypatch):
    import glancemap.training.trainer as trainer
    from glancemap import load_explainer

    first = train(_config(tmp_path, image_folder, max_steps=1), progress_bar=False)
    seen = []
    real_step = trainer.training_step

    def spy(explainer, head, images, loss_fn, *rest):
        if not seen:  # the head the fine-tune starts from is the saved one
            seen.append({k: v.clone() for k, v in head.state_dict().items()})
        loss, terms = real_step(explainer, head, images, loss_fn, *rest)
        seen.append(terms)
        return loss, terms

    monkeypatch.setattr(trainer, "training_step", spy)
    cfg = replace(
        _config(tmp_path / "ft", image_folder, max_steps=2),
        init_from=str(tmp_path / "run" / "explainer"),
        loss={"destroy": 1.0, "rank_destroy": 1.0},
    )
    train(cfg, progress_bar=False)
    saved = load_explainer(tmp_path / "run" / "explainer", backbone=first.backbone, auxiliary=first.auxiliary)
    assert all(torch.equal(v, saved.head.state_dict()[k]) for k, v in seen[0].items())
    assert all(torch.isfinite(t[k]) for t in seen[1:] for k in ("destroy", "rank_destroy"))


def test_shared_head_trains_saves_and_reloads(tmp_path, image_folder):
    from glancemap import load_explainer

    explainer = train(_config(tmp_path, image_folder, max_steps=2, head="shared", lr=1e-2), progress_bar=False)
    saved = load_explainer(tmp_path / "run" / "explainer", backbone=explainer.backbone, auxiliary=explainer.auxiliary)
    assert saved.head.kind == "shared" and saved.training_info["head"] == "shared"
    x = torch.rand(2, 3, *explainer.input_size)
    assert torch.allclose(explainer(x, [1, 2]), saved(x, [1, 2]))
    # the run moved the projection away from the CAM start (zero on the finer stages)
    d = saved.head.channels[-1]
    assert saved.head.projection[:, :-d].abs().max() > 1e-4
    with pytest.raises(ValueError, match="other settings"):
        train(_config(tmp_path, image_folder, max_steps=3, head="per-class", lr=1e-2), resume=True, progress_bar=False)


def test_low_rank_training_changes_only_a_low_rank_part_and_resumes(tmp_path, image_folder, monkeypatch):
    from glancemap import load_explainer

    cfg = _config(tmp_path, image_folder, epochs=2, max_steps=4, head="shared", lr=1e-2, low_rank=2, holdout=0)
    interrupted_run(monkeypatch, cfg, after_steps=2)  # a checkpoint of the restricted head at step 2
    explainer = train(cfg, resume=True, progress_bar=False)
    saved = load_explainer(tmp_path / "run" / "explainer", backbone=explainer.backbone, auxiliary=explainer.auxiliary)
    assert saved.training_info["low_rank"] == 2 and saved.training_info["steps"] == 4
    # the start's projection is zero on the finer stages: what is there now is the change alone
    d = saved.head.channels[-1]
    change = saved.head.projection[:, :-d].detach()
    assert change.abs().max() > 1e-4  # it trained
    assert torch.linalg.matrix_rank(change, rtol=1e-4).item() <= 2  # singular values past 2: float rounding
    for block in saved.head.blocks:  # frozen at the start: zero BN scales, so each block is the identity
        assert not block.bn.weight.any() and not block.bn.bias.any()
    with pytest.raises(ValueError, match="shared head"):
        train(_config(tmp_path, image_folder, max_steps=2, head="per-class", low_rank=2, out=str(tmp_path / "pc")))


def test_other_label_sets_get_a_distilled_readout_and_the_paper_recipe_no_readout(tmp_path, image_folder, capsys):
    from glancemap.models import load_classifier
    from glancemap.training import build_explainer

    cpu = torch.device("cpu")
    files = list_images([str(image_folder)])[:8]
    cfg = _config(tmp_path, image_folder)  # head="auto", init="aux-cam"
    own = build_explainer(cfg, cpu, files)
    assert own.head.kind == "shared" and own.gate_margin == 4.0  # the class gate, where it was measured
    err = capsys.readouterr().err
    assert "its own classifier" in err and "shown with the class gate (margin 4)" in err
    ten = load_classifier(TINY_BACKBONE, "random", num_classes=10)
    distilled = build_explainer(cfg, cpu, files, backbone=ten)
    assert distilled.head.kind == "shared" and distilled.config()["readout"] == "distilled"
    assert distilled.gate_margin is None  # not measured on distilled readouts: plain maps
    err = capsys.readouterr().err
    assert "readout distilled from the backbone on 8 images" in err and "without the class gate" in err
    assert distilled.training_info["readout"]["images"] == 8
    # the start is the distilled readout's CAM: the head's class weights read the last stage with it
    weight, _ = distilled.head.class_weights(None)
    last = distilled.head.channels[-1]
    assert torch.count_nonzero(weight[:, :-last]) == 0 and torch.count_nonzero(weight[:, -last:]) > 0
    with pytest.raises(ValueError, match="needs a readout distilled on training images"):
        build_explainer(cfg, cpu, backbone=ten)
    paper = build_explainer(replace(cfg, init="paper"), cpu, files, backbone=ten)
    assert paper.head.kind == "per-class" and "the paper's recipe" in capsys.readouterr().err
    assert paper.gate_margin is None


def test_scale_augmentation_draws_sides_per_step_reproducibly(tmp_path, image_folder, monkeypatch):
    import glancemap.training.trainer as trainer

    cfg = _config(tmp_path, image_folder, epochs=2, train_aux_sides=[48, 96], seed=3)
    drawn = [trainer.step_aux_size(cfg, step) for step in range(40)]
    assert set(drawn) == {(48, 48), (96, 96)}
    assert drawn == [trainer.step_aux_size(cfg, step) for step in range(40)]  # resume and other ranks agree
    assert trainer.step_aux_size(replace(cfg, train_aux_sides=[]), 5) is None
    with pytest.raises(ValueError, match="positive sides"):
        trainer.step_aux_size(replace(cfg, train_aux_sides=[0]), 0)

    seen = []
    real_step = trainer.training_step

    def spy(explainer, head, images, loss_fn, aux_size=None, *rest):
        seen.append((aux_size, tuple(explainer.features(images, aux_size)[0].shape[-2:])))
        return real_step(explainer, head, images, loss_fn, aux_size, *rest)

    monkeypatch.setattr(trainer, "training_step", spy)
    train(cfg, progress_bar=False)
    assert [size for size, _ in seen] == drawn[: len(seen)] and len(seen) == 6
    finest = {size: shape for size, shape in seen}
    assert finest[(96, 96)][0] > finest[(48, 48)][0]  # the head really read features at both sides
    with pytest.raises(ValueError, match="other settings \\(train_aux_sides"):  # a resume must keep it
        train(replace(cfg, train_aux_sides=[48]), resume=True, progress_bar=False)


def test_checkpoint_from_before_a_new_setting_still_resumes(tmp_path, image_folder, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg = _config(tmp_path, image_folder)
    train(cfg, progress_bar=False)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = fh.metadata()
    saved = json.loads(meta["config"])
    del saved["train_aux_sides"]  # as written before scale augmentation existed
    meta["config"] = json.dumps(saved)
    save_file(load_file(str(ckpt)), str(ckpt), metadata=meta)
    capsys.readouterr()
    train(cfg, resume=True, progress_bar=False)  # the missing field means its default: same settings
    assert "resumed from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="train_aux_sides"):
        train(replace(cfg, train_aux_sides=[48]), resume=True, progress_bar=False)


def test_sigterm_stops_training_after_the_step_it_came_in_and_saves_it(tmp_path, image_folder, monkeypatch, capsys):
    """SIGTERM, how SLURM, Kubernetes and torchrun stop a job, stops a run as Ctrl-C does, at a step's end
    (never half-way through an optimiser step); the handler is put back afterwards."""
    import glancemap.training.trainer as trainer

    real_step, calls = trainer.training_step, []

    def terminated_in_step_two(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args)

    def not_caught(signum, frame):  # were train() not to catch it, SIGTERM would end the test run itself
        raise RuntimeError("SIGTERM reached the handler train() should have replaced")

    monkeypatch.setattr(trainer, "training_step", terminated_in_step_two)
    original = signal.signal(signal.SIGTERM, not_caught)
    try:
        cfg = _config(tmp_path, image_folder, epochs=3, checkpoint_every=5)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, progress_bar=False)
        assert signal.getsignal(signal.SIGTERM) is not_caught
    finally:
        signal.signal(signal.SIGTERM, original)
    assert "stopped at step 2: checkpoint saved" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")[1]["progress"]["step"] == 2
