"""Models users actually have: fine-tuned checkpoints with their own class count and class names."""

import json

import pytest
import torch
from safetensors.torch import save_file

from glancemap import PTameExplainer, load_classifier, load_explainer
from glancemap.cli import main

from .conftest import TINY_AUX, TINY_BACKBONE, write_images
from .test_training import TINY


def _fine_tuned(tmp_path, k=3):
    """A tiny timm backbone with a new k-class classifier, saved as a safetensors state_dict."""
    base = load_classifier(TINY_BACKBONE, "random", num_classes=k)
    with torch.no_grad():
        base.model.classifier.weight.normal_()
    path = tmp_path / "fine_tuned.safetensors"
    save_file({k_: v.contiguous() for k_, v in base.model.state_dict().items()}, str(path))
    return base, path


def test_the_class_count_is_read_off_the_checkpoint(tmp_path):
    base, path = _fine_tuned(tmp_path, k=3)
    clf = load_classifier(TINY_BACKBONE, path)  # no num_classes given
    assert clf.num_classes == 3
    x = torch.rand(2, 3, *clf.input_size)
    assert torch.allclose(clf(x), base(x), atol=1e-5)
    tv = load_classifier("torchvision:resnet18", "random", num_classes=5)
    torch.save(tv.model.state_dict(), tmp_path / "tv.pth")
    assert load_classifier("torchvision:resnet18", tmp_path / "tv.pth").num_classes == 5


def test_class_names_from_a_file_are_checked_against_the_outputs(tmp_path):
    _, path = _fine_tuned(tmp_path, k=3)
    (tmp_path / "names.txt").write_text("scratch\ndent\n\ncrack\n")
    assert load_classifier(TINY_BACKBONE, path, class_names=tmp_path / "names.txt").class_names == [
        "scratch",
        "dent",
        "crack",
    ]
    (tmp_path / "two.txt").write_text("scratch\ndent\n")
    with pytest.raises(ValueError, match=r"two\.txt: 2 class names for a classifier with 3 outputs"):
        load_classifier(TINY_BACKBONE, path, class_names=tmp_path / "two.txt")


def test_imagefolder_names_reach_the_explainer_and_its_outputs(tmp_path, capsys):
    _, path = _fine_tuned(tmp_path, k=3)
    data = tmp_path / "data"
    for i, cls in enumerate(["crack", "dent", "scratch"]):
        write_images(data / cls, 3, seed=i)
    out = tmp_path / "run"
    flags = [*TINY]
    flags[flags.index("--backbone-weights") + 1] = str(path)  # the fine-tuned file instead of random weights
    assert main(["train", str(data), "--out", str(out), "--max-steps", "1", "--batch-size", "4",
                 "--class-names", "folders", *flags]) == 0  # fmt: skip
    cfg = json.loads((out / "explainer" / "config.json").read_text())
    assert cfg["class_names"] == ["crack", "dent", "scratch"] and cfg["num_classes"] == 3
    explainer = load_explainer(out / "explainer")  # rebuilt by name, with the names it was trained with
    assert explainer.class_names == ["crack", "dent", "scratch"]
    maps = tmp_path / "maps"
    assert main(["explain", str(data / "dent"), "--explainer", str(out / "explainer"), "--out", str(maps),
                 "--top-k", "2"]) == 0  # fmt: skip
    summary = json.loads((maps / "summary.json").read_text())["explained"]
    assert all(set(e["names"]) <= {"crack", "dent", "scratch"} for e in summary.values())


def test_a_hugging_face_classifier_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
        intermediate_size=37, num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"},
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config).eval()  # random init: nothing downloaded
    hf.save_pretrained(tmp_path / "vit")
    processor = transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3
    )
    processor.save_pretrained(tmp_path / "vit")
    clf = load_classifier(f"hf:{tmp_path / 'vit'}")
    assert clf.class_names == ["cat", "dog", "fox"] and clf.input_size == (32, 32)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(clf(x), hf(pixel_values=(x - 0.5) / 0.25).logits, atol=1e-5)  # ModelOutput unwrapped
    explainer = PTameExplainer(clf, load_classifier(TINY_AUX, "random"))  # explained end to end
    assert explainer(x).shape == (2, 1, 32, 32)
    # trained by its hf: name, with a readout distilled for its 3 classes, reloaded by name
    write_images(tmp_path / "images", 6)
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "images"), "--out", str(out), "--backbone", f"hf:{tmp_path / 'vit'}",
                 "--auxiliary", TINY_AUX, "--auxiliary-weights", "random", "--max-steps", "2", "--batch-size", "3",
                 "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    trained = load_explainer(out / "explainer")
    assert trained.head.kind == "shared" and trained.config()["readout"] == "distilled"
    assert trained.class_names == ["cat", "dog", "fox"] and trained(x).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="cannot load the Hugging Face image classifier"):
        load_classifier(f"hf:{tmp_path / 'vit' / 'config.json'}")  # a file, not a model folder
