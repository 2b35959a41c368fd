"""Misuse a careless script would commit: each case ends in a clear message, never in silent success."""

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from glancemap import ExplainerMismatchError, PTameExplainer, load_classifier, load_explainer
from glancemap.cli import main
from glancemap.training import TrainConfig, TrainingDivergedError, train
from glancemap.training.outdir import claim_folder

from .conftest import TINY_AUX, TINY_BACKBONE, write_images
from .test_training import TINY, _config, _log, interrupted_run


@pytest.fixture()
def fresh_explainer():
    """Built from freshly loaded networks: the ones a saved explainer rebuilds by name."""
    return PTameExplainer(load_classifier(TINY_BACKBONE, "random"), load_classifier(TINY_AUX, "random"))


def _train_cli(images, out, *extra):
    return main(["train", str(images), "--out", str(out), "--batch-size", "4", *TINY, *extra])


# ------------------------------------------------------------------ output folders


def test_a_finished_folder_is_not_replaced_without_being_asked(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    assert _train_cli(image_folder, out, "--max-steps", "2") == 0
    head = (out / "explainer" / "head.safetensors").read_bytes()
    assert _train_cli(image_folder, out, "--max-steps", "2") == 2
    err = capsys.readouterr().err
    assert "holds another run's results" in err and "--resume" in err and "--overwrite" in err
    assert (out / "explainer" / "head.safetensors").read_bytes() == head  # nothing touched
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert _train_cli(image_folder, out, "--max-steps", "3", "--overwrite") == 0
    assert [r["step"] for r in _log(out)] == [1, 2, 3]  # the new run's log alone


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    with claim_folder(out, resume=False, overwrite=False):  # a live run holds the folder
        assert _train_cli(image_folder, out, "--max-steps", "1") == 2
        assert f"in use by another training run (pid {os.getpid()})" in capsys.readouterr().err
    assert _train_cli(image_folder, out, "--max-steps", "1") == 0  # released when the holder ends


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path, image_folder):
    out = tmp_path / "run"
    code = (
        "import pathlib, time\n"
        "from glancemap.training.outdir import claim_folder\n"
        f"with claim_folder(pathlib.Path({str(out)!r}), False, False):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match="in use"):
        train(_config(tmp_path, image_folder, max_steps=1), progress_bar=False)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / ".lock").exists()  # the file stays; the lock went with the process
    train(_config(tmp_path, image_folder, max_steps=1), progress_bar=False)


def test_resume_before_the_first_checkpoint_starts_a_clean_log(tmp_path, image_folder, monkeypatch):
    interrupted_run(monkeypatch, _config(tmp_path, image_folder, checkpoint_every=5), after_steps=2)
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    train(_config(tmp_path, image_folder, checkpoint_every=5), resume=True, progress_bar=False)
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2, 3]  # not 1, 2, 1, 2, 3


def test_resume_with_other_images_is_refused(tmp_path, image_folder):
    train(_config(tmp_path, image_folder, epochs=2, max_steps=2), progress_bar=False)
    other = tmp_path / "other"
    write_images(other, 8, seed=5)
    with pytest.raises(ValueError, match="trained on 12 other image.*these 8 differ"):
        train(_config(tmp_path, other, epochs=2, max_steps=3), resume=True, progress_bar=False)


def test_stale_temporary_files_are_removed(tmp_path, image_folder):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.safetensors.tmp").write_bytes(b"half a checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable images"):  # stops before it writes anything itself
        train(_config(tmp_path, empty, max_steps=1), progress_bar=False)
    assert not list(out.glob("*.tmp"))


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    "flag,value",
    [("--batch-size", "-4"), ("--batch-size", "0"), ("--epochs", "0"), ("--checkpoint-every", "0"), ("--lr", "0")],
)
def test_train_refuses_out_of_range_numbers_before_writing_anything(tmp_path, image_folder, capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        _train_cli(image_folder, tmp_path / "run", flag, value)
    assert stop.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_config_from_python_is_checked_too(tmp_path, image_folder):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got -4"):
        train(_config(tmp_path, image_folder, batch_size=-4), progress_bar=False)
    with pytest.raises(ValueError, match="ce must be a number >= 0"):
        TrainConfig(data=[], out="x", loss={"ce": -1.0}).validate()
    assert not (tmp_path / "run").exists()


def test_evaluate_and_explain_refuse_bad_numbers_and_empty_input(tmp_path, fresh_explainer, capsys):
    fresh_explainer.save(tmp_path / "expl")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a jpeg")
    (junk / "b.png").write_bytes(b"")
    base = ["evaluate", "--data", str(junk), "--explainer", str(tmp_path / "expl"), "--out", str(tmp_path / "ev")]
    for flag, value in [("--batch-size", "-1"), ("--limit", "-1"), ("--rise-masks", "0")]:
        with pytest.raises(SystemExit):
            main([*base, flag, value])
        assert f"argument {flag}: must be an integer >= 1" in capsys.readouterr().err
    assert main([*base, "--methods", "gaussian", "--no-progress"]) == 2
    assert "nothing was scored" in capsys.readouterr().err
    assert main([*base, "--methods", "gaussian", "--limit-for", "gaussian=0"]) == 2
    assert "--limit-for wants METHOD=N with N an integer >= 1" in capsys.readouterr().err
    images = tmp_path / "images"
    write_images(images, 1)
    assert main(["explain", str(images), "--explainer", str(tmp_path / "expl"), "--out", str(tmp_path / "o"),
                 "--top-k", "5000"]) == 2  # fmt: skip
    assert "top_k must be an integer >= 1 and <= the explainer's 1000 classes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written


# ------------------------------------------------------------------ divergence


def test_weights_that_become_non_finite_are_never_checkpointed(tmp_path, image_folder, monkeypatch):
    import glancemap.training.trainer as trainer

    real_step = trainer.training_step

    def poisoned(explainer, head, *rest):
        loss, terms = real_step(explainer, head, *rest)
        with torch.no_grad():
            next(head.parameters()).fill_(float("inf"))  # the loss of this step is still finite
        return loss, terms

    monkeypatch.setattr(trainer, "training_step", poisoned)
    with pytest.raises(TrainingDivergedError, match="weights became non-finite at step 1; no checkpoint"):
        train(_config(tmp_path, image_folder, checkpoint_every=1), progress_bar=False)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_advice_warns_when_the_last_checkpoint_has_exploding_weights(tmp_path, image_folder, monkeypatch):
    from glancemap.training.checkpoint import checkpoint_advice

    train(_config(tmp_path, image_folder, max_steps=2), progress_bar=False)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    assert "continue from it with --resume and a lower --lr" in checkpoint_advice(ckpt)
    import glancemap.training.trainer as trainer

    monkeypatch.setattr(trainer, "max_abs_weight", lambda head: 6e12)
    train(_config(tmp_path, image_folder, max_steps=2), progress_bar=False, overwrite=True)
    assert "weights have grown large" in checkpoint_advice(ckpt) and "6e+12" in checkpoint_advice(ckpt)


# ------------------------------------------------------------------ malformed files


def test_malformed_explainer_configs_are_named(tmp_path, fresh_explainer):
    fresh_explainer.save(tmp_path / "e")
    cfg_path = tmp_path / "e" / "config.json"
    good = json.loads(cfg_path.read_text())
    cases = {
        "holds a JSON list": json.dumps([1, 2]),
        "missing or malformed layers, aux_input_size": json.dumps(good | {"layers": 3, "aux_input_size": "big"}),
        "'backbone' must be an object": json.dumps(good | {"backbone": "x"}),
    }
    for message, text in cases.items():
        cfg_path.write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            load_explainer(tmp_path / "e")
        assert str(cfg_path) in str(err.value)
    cfg_path.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_explainer(tmp_path / "e")


def test_junk_weights_and_checkpoints_are_named(tmp_path, fresh_explainer, image_folder):
    fresh_explainer.save(tmp_path / "e")
    (tmp_path / "e" / "head.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{junk}...")
    with pytest.raises(ValueError, match=r"cannot read .*head\.safetensors"):
        load_explainer(tmp_path / "e")
    (tmp_path / "w.safetensors").write_bytes(b"junkjunkjunk")
    with pytest.raises(ValueError, match=r"could not read weights from .*w\.safetensors"):
        load_classifier(TINY_BACKBONE, tmp_path / "w.safetensors")
    from safetensors.torch import save_file

    out = tmp_path / "run"
    out.mkdir()
    save_file({"head.x": torch.zeros(1)}, str(out / "checkpoint.safetensors"))  # no metadata at all
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors is not a glancemap checkpoint"):
        train(_config(tmp_path, image_folder, max_steps=1), resume=True, progress_bar=False)


def test_malformed_results_lines_are_named(tmp_path, fresh_explainer, image_folder, capsys):
    fresh_explainer.save(tmp_path / "expl")
    out = tmp_path / "ev"
    args = ["evaluate", "--data", str(image_folder), "--explainer", str(tmp_path / "expl"), "--out", str(out),
            "--methods", "gaussian", "--limit", "2", "--deletion-steps", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    results = out / "results.jsonl"
    lines = results.read_text()
    for bad in ("{}\n", "garbage\n"):
        results.write_text(lines + bad)
        assert main(args) == 2
        assert "results.jsonl line 3 is not" in capsys.readouterr().err


def test_the_command_prints_no_traceback_unless_asked(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.json").write_text('{"format": "glancemap-explainer/1"}')
    cmd = [sys.executable, "-m", "glancemap.cli", "info", "--explainer", str(tmp_path / "e")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "not a valid explainer config" in run.stderr
    debug = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# ------------------------------------------------------------------ the right backbone


def test_explainer_refuses_a_backbone_with_other_weights(tmp_path, tiny_explainer, tiny_backbone, tiny_aux):
    tiny_explainer.save(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["backbone"]["fingerprint"] == tiny_backbone.fingerprint()
    retrained = load_classifier(TINY_BACKBONE, "random")
    with torch.no_grad():
        retrained.model.classifier.weight.mul_(1.01)  # same name, shape and class count
    with pytest.raises(ExplainerMismatchError, match="backbone 'test_efficientnet' with other weights"):
        load_explainer(tmp_path / "e", backbone=retrained, auxiliary=tiny_aux)
    # a config relabelled to claim other weights is caught the same way
    cfg["auxiliary"]["fingerprint"] = "0123456789abcdef"
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExplainerMismatchError, match="auxiliary 'test_resnet' with other weights"):
        load_explainer(tmp_path / "e", backbone=tiny_backbone)
    # configs from before fingerprints load as before
    for role in ("backbone", "auxiliary"):
        del cfg[role]["fingerprint"]
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    load_explainer(tmp_path / "e", backbone=retrained, auxiliary=tiny_aux)


def test_random_weights_are_the_same_network_every_time():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = load_classifier(TINY_AUX, "random")
    assert torch.equal(torch.rand(1), expected)  # the caller's random state is left as it was
    torch.manual_seed(7)
    assert load_classifier(TINY_AUX, "random").fingerprint() == a.fingerprint()


# ------------------------------------------------------------------ files that are not images


def test_looping_links_and_folders_named_like_images_are_counted(tmp_path):
    from glancemap.images import list_images, scan_images

    d = tmp_path / "imgs"
    write_images(d, 2)
    (d / "loop_a").symlink_to(d / "loop_b")
    (d / "loop_b").symlink_to(d / "loop_a")
    (d / "album.jpg").mkdir()
    files = list_images([d])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        good, log = scan_images(files)
    assert len(good) == 2 and log.count == 3
    assert sorted(Path(p).name for p in log.seen) == ["album.jpg", "loop_a", "loop_b"]


def test_the_decompression_bomb_warning_names_the_file(tmp_path, monkeypatch):
    from glancemap.images import load_image

    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # just above: a warning, not an error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(path)
    bombs = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert len(bombs) == 1 and str(path) in str(bombs[0].message)
