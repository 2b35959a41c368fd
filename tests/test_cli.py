import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from glancemap.cli import main

from .test_training import TINY


def test_train_explain_info_end_to_end(tmp_path, image_folder, capsys):
    (image_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (image_folder / "readme.txt.old").write_text("hello")
    out = tmp_path / "run"
    assert main(["train", str(image_folder), "--out", str(out), "--max-steps", "2", "--batch-size", "4", *TINY]) == 0
    assert "skipped 2 bad files" in capsys.readouterr().out

    maps_dir = tmp_path / "maps"
    rc = main(
        ["explain", str(image_folder), "--explainer", str(out / "explainer"), "--out", str(maps_dir), "--top-k", "2"]
    )
    assert rc == 0
    summary = json.loads((maps_dir / "summary.json").read_text())
    assert len(summary["explained"]) == 12 and len(summary["skipped"]) == 2
    maps = np.load(maps_dir / "img000.npy")
    assert maps.shape[0] == 2 and maps.min() >= 0 and maps.max() <= 1
    with Image.open(maps_dir / "img000.png") as panel:
        assert panel.width == 3 * maps.shape[2]  # input + 2 overlays side by side
    entry = next(iter(summary["explained"].values()))
    assert len(entry["names"]) == 2 and entry["scores"][0] >= entry["scores"][1]
    dark = tmp_path / "dark"
    explain = ["explain", str(image_folder), "--explainer", str(out / "explainer"), "--top-k", "2"]
    assert main([*explain, "--out", str(dark), "--negative-slope", "0.05"]) == 0
    darker = np.load(dark / "img000.npy")
    assert darker.shape == maps.shape and darker.min() >= 0 and darker.max() <= 1 and not np.allclose(darker, maps)
    zero = tmp_path / "zero"
    assert main([*explain, "--out", str(zero), "--negative-slope", "0.05", "--negative-at", "zero"]) == 0
    at_zero = np.load(zero / "img000.npy")
    assert at_zero.shape == maps.shape and not np.allclose(at_zero, darker)
    with pytest.raises(SystemExit):  # refused at parse time
        main([*explain, "--out", str(dark), "--negative-slope", "0"])
    with pytest.raises(SystemExit):
        main([*explain, "--out", str(dark), "--negative-at", "floor"])
    gated, plain = tmp_path / "gated", tmp_path / "plain"
    assert main([*explain, "--out", str(gated), "--gate-margin", "0"]) == 0
    assert main([*explain, "--out", str(plain), "--no-gate"]) == 0
    gated_maps, plain_maps = np.load(gated / "img000.npy"), np.load(plain / "img000.npy")
    assert gated_maps.shape == maps.shape and gated_maps.max() <= 1 and not np.allclose(gated_maps, plain_maps)
    for bad in (["--gate-margin", "-1"], ["--gate-margin", "1", "--no-gate"]):
        with pytest.raises(SystemExit):
            main([*explain, "--out", str(dark), *bad])

    assert main(["info", "--explainer", str(out / "explainer")]) == 0
    text = capsys.readouterr().out
    assert "test_efficientnet" in text and "test_resnet" in text
    assert "head       shared" in text  # --head auto: the tiny auxiliary classifies the backbone's 1000 classes
    assert "display" not in text  # plain min-max maps, through the class gate new shared heads get
    assert "gate       pixels its readout gives to other classes darkened (margin 4.0)" in text
    assert main(["info", "--explainer", "selective"]) == 0
    assert "pixels below the head's zero dimmed to 0.01" in capsys.readouterr().out


def test_recipe_options_reach_the_saved_explainer(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    opts = ["--destroy", "1", "--extra-aux-sizes", "96", "--experimental", "rank_destroy=2", "rank_fractions=0.2,0.4"]
    assert (
        main(["train", str(image_folder), "--out", str(out), "--max-steps", "1", "--batch-size", "4", *TINY, *opts])
        == 0
    )
    cfg = json.loads((out / "explainer" / "config.json").read_text())
    assert cfg["extra_aux_sizes"] == [[96, 96]]
    assert main(["info", "--explainer", str(out / "explainer")]) == 0
    assert "[[96, 96]] when explaining" in capsys.readouterr().out
    weights = cfg["training"]["loss_weights"]
    assert (weights["destroy"], weights["rank_destroy"]) == (1.0, 2.0)
    assert weights["rank_fractions"] == [0.2, 0.4]
    capsys.readouterr()
    bad = ["train", str(image_folder), "--out", str(tmp_path / "bad"), "--max-steps", "1", *TINY, "--experimental"]
    assert main([*bad, "rank_destroy=1", "rank_fractions=0.6,0.3"]) == 2
    assert "rank_fractions must satisfy" in capsys.readouterr().err
    assert main([*bad, "destroy_fill=1"]) == 2
    assert "--experimental wants KEY=VALUE" in capsys.readouterr().err


def test_errors_are_messages_not_tracebacks(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "glancemap.cli",
            "explain",
            str(tmp_path),
            "--explainer",
            str(tmp_path / "nothing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "not a glancemap explainer" in run.stderr and "Traceback" not in run.stderr


def test_import_option_registers_custom_models(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(
        "import torch.nn as nn\n"
        "from glancemap import Classifier, register_classifier\n"
        "net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n"
        "register_classifier('toy_cli_net',\n"
        "                    lambda w: Classifier(net, name='toy_cli_net', input_size=32, num_classes=3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--import", "my_models", "info"]) == 0
    assert "toy_cli_net" in capsys.readouterr().out
