from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glancemap import PTameExplainer, load_classifier

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_BACKBONE = "test_efficientnet"  # timm's tiny test nets, random weights: nothing downloaded
TINY_AUX = "test_resnet"


def _experiment(name: str):
    """A module of experiments/ (scripts, not part of the package), loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


imagenet_sample_split = _experiment("sample_split").imagenet_sample_split  # the train/dev split docs/ report on


def shared_sample_dir() -> Path | None:
    env = os.environ.get("GLANCEMAP_SAMPLE_DIR")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[1]
    candidates += [root.parent / "shared" / "data" / "imagenet-sample", root / "shared" / "data" / "imagenet-sample"]
    for c in candidates:
        if (c / "labels.csv").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    d = shared_sample_dir()
    if d is None:
        pytest.skip(
            "shared ImageNet sample not found: set GLANCEMAP_SAMPLE_DIR or put it at ../shared/data/imagenet-sample"
        )
    return d


@pytest.fixture(scope="session")
def tiny_backbone():
    torch.manual_seed(0)
    return load_classifier(TINY_BACKBONE, "random")


@pytest.fixture(scope="session")
def tiny_aux():
    torch.manual_seed(1)
    return load_classifier(TINY_AUX, "random")


@pytest.fixture()
def tiny_explainer(tiny_backbone, tiny_aux) -> PTameExplainer:
    torch.manual_seed(2)
    return PTameExplainer(tiny_backbone, tiny_aux)


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"
