"""The grid pointing game: cells, the three scores, deterministic grids."""

import pytest
import torch
import torch.nn as nn

from glancemap import Classifier
from glancemap.localization import cell_masks, grid_localization, plan_grids, tile


class _CellEvidence(nn.Module):
    """Toy backbone on a 2x2 grid: class c's logit is 10x the mean red value inside cell c."""

    def forward(self, x):
        masks = cell_masks(2, tuple(x.shape[-2:]), x.device).float()  # (4,H,W)
        return 10 * torch.einsum("bhw,khw->bk", x[:, 0], masks) / masks.sum((1, 2))


def test_cells_tile_the_image_row_by_row():
    masks = cell_masks(3, (10, 7))
    assert masks.shape == (9, 10, 7) and torch.equal(masks.sum(0), torch.ones(10, 7, dtype=torch.long))
    assert masks[0, 0, 0] and masks[2, 0, 6] and masks[8, 9, 6] and masks[4, 5, 3]
    images = torch.stack([torch.full((3, 8, 8), k / 8) for k in range(9)])
    grid = tile(images, 3, (30, 30))
    for k in range(9):  # each image lands in its own cell
        assert torch.allclose(grid[:, cell_masks(3, (30, 30))[k]], torch.tensor(k / 8), atol=1e-6)


def test_scores_of_the_right_a_uniform_and_the_wrong_map():
    n, size = 2, (64, 64)
    cells = torch.arange(4)
    right = cell_masks(n, size)[:, None].float() * torch.rand(4, 1, *size)  # any values inside its own cell
    scores = grid_localization(right, cells, n)
    assert torch.equal(scores["mass share"], torch.ones(4)) and torch.equal(scores["pointing hit"], torch.ones(4))
    assert torch.equal(scores["top-area share"], torch.ones(4))
    uniform = grid_localization(torch.ones(4, 1, *size), cells, n)
    assert torch.allclose(uniform["mass share"], torch.full((4,), 0.25))
    assert (uniform["top-area share"] - 0.25).abs().max() < 0.05  # ties broken at random: about 1/n^2
    wrong = grid_localization(right, (cells + 1) % 4, n)
    assert wrong["mass share"].sum() == 0 and wrong["top-area share"].sum() == 0 and wrong["pointing hit"].sum() == 0


def test_top_area_share_ignores_monotone_rescaling_but_mass_share_does_not():
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 32, 32)
    cells = torch.tensor([0, 3, 1])
    before = grid_localization(maps, cells, 2)
    after = grid_localization(5 * maps.pow(4) + 2, cells, 2)
    assert torch.equal(before["top-area share"], after["top-area share"])
    assert torch.equal(before["pointing hit"], after["pointing hit"])
    assert not torch.allclose(before["mass share"], after["mass share"])


def test_a_gradient_map_of_the_toy_backbone_finds_each_class_in_its_cell():
    clf = Classifier(_CellEvidence(), name="cells", input_size=32, num_classes=4, mean=(0, 0, 0), std=(1, 1, 1))
    grid = tile(torch.rand(4, 3, 20, 20), 2, (32, 32))[None].expand(4, -1, -1, -1).clone().requires_grad_(True)
    clf(grid).gather(1, torch.arange(4)[:, None]).sum().backward()
    maps = grid.grad.abs().sum(1, keepdim=True)
    scores = grid_localization(maps, torch.arange(4), 2)
    assert torch.allclose(scores["mass share"], torch.ones(4)) and scores["pointing hit"].sum() == 4


def test_grids_are_deterministic_and_hold_different_classes():
    pairs = [(f"img{i}.jpg", i % 6) for i in range(30)]
    grids = plan_grids(pairs, 2, seed=3)
    assert grids == plan_grids(list(reversed(pairs)), 2, seed=3)  # the input order does not matter
    assert grids != plan_grids(pairs, 2, seed=4)
    assert len(grids) == 7 and all(len(set(g.classes)) == 4 for g in grids)
    used = [f for g in grids for f in g.files]
    assert len(used) == len(set(used))
    with pytest.raises(ValueError, match="n >= 2"):
        plan_grids(pairs, 1)


def _bumps(x):
    """(B,4,H,W): how much each pixel's red value looks like class c's shade, 0.2 * (c + 1)."""
    shades = 0.2 * torch.arange(1, 5, dtype=x.dtype, device=x.device)
    return torch.exp(-((x[:, :1] - shades[None, :, None, None]) ** 2) / 0.002)


class _Shades(nn.Module):
    """Toy backbone: class c is a photo of red shade 0.2 (c + 1); its evidence moves with the photo."""

    def forward(self, x):
        return 10 * _bumps(x).mean((2, 3))


class _Oracle:
    """The pixels that make up the target's logit: a map that explains the toy exactly."""

    def __call__(self, images, targets):
        return _bumps(images)[torch.arange(len(images)), targets][:, None]


def test_grid_benchmark_streams_one_record_per_cell_and_resumes(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from glancemap.evaluation import GridConfig, Run, read_results, run_grid_evaluation, summarize
    from glancemap.methods import CenteredGaussian

    clf = Classifier(_Shades(), name="shades", input_size=32, num_classes=4, mean=(0, 0, 0), std=(1, 1, 1))
    files = []
    for i in range(9):  # photo i is of class i % 4: one red shade all over
        arr = np.zeros((32, 32, 3), np.uint8)
        arr[..., 0] = round(255 * 0.2 * (i % 4 + 1))
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(arr).save(files[-1])
    config = GridConfig(n=2, threshold=0.3)
    run = Run(tmp_path / "g", clf, {"backbone": "shades"}, config, {})
    methods = {"oracle": _Oracle, "gaussian": CenteredGaussian}
    grids = run_grid_evaluation(run, files, methods, config, batch_size=4, progress=False, limits={"gaussian": 1})
    assert len(grids) == 2  # 9 photos of 4 classes: two full grids, one photo left over
    records = read_results(run.results)
    assert set(records) == {"oracle", "gaussian"} and len(records["oracle"]) == 8
    assert sorted(records["gaussian"]) == [f"grid0000/cell{c}" for c in range(4)]  # limited to its first grid
    rows = {r["method"]: r for r in summarize(run.results)}
    assert rows["oracle"]["mass share"] > 0.99 and rows["oracle"]["pointing hit"] == 1.0  # edges blur a little
    assert rows["gaussian"]["mass share"] == pytest.approx(0.25, abs=1e-6)  # symmetric: a quarter in every cell
    lines = run.results.read_text().count("\n")
    run_grid_evaluation(run, files, methods, config, batch_size=4, progress=False, limits={"gaussian": 1})
    assert run.results.read_text().count("\n") == lines  # finished: nothing redone
    run_grid_evaluation(run, files, methods, config, batch_size=4, progress=False)  # the limit lifted
    assert len(read_results(run.results)["gaussian"]) == 8 and run.results.read_text().count("\n") == lines + 4
    assert json.loads((tmp_path / "g" / "run.json").read_text())["metrics"]["n"] == 2
