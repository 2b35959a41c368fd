"""The grid pointing game as a streamed, resumable benchmark (``glancemap evaluate --grid N``).

One record per method and grid cell goes to ``results.jsonl`` (keyed
``grid<g>/cell<c>``), so a killed run resumes where it stopped; the tables come
from the same code as the faithfulness tables.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..images import BadFileLog, image_batches, load_image
from ..localization import Grid, grid_localization, plan_grids, tile
from .stream import Run


@dataclass
class GridConfig:
    """How the grids are made, stored beside the results (a folder refuses other settings)."""

    n: int = 2  # cells per side
    threshold: float = 0.5  # the backbone's softmax for an image's own top-1, to enter a grid
    seed: int = 0  # grid composition and tie-breaking
    target: str = "each cell's class is the backbone's top-1 on that image alone"
    space: str = "cells resized (antialiased) into one image at the backbone's input size"

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def confident_images(backbone, files: Sequence[Path], threshold: float, batch_size: int = 16) -> list[tuple[str, int]]:
    """``(file, class)`` of each readable image whose top-1 softmax on its own is at least ``threshold``."""
    transform = backbone.preprocessing.eval_transform()
    out = []
    for chunk, images in image_batches(files, transform, batch_size, BadFileLog()):
        probs = backbone(images.to(backbone.device)).softmax(dim=1)
        score, cls = probs.max(dim=1)
        out += [(str(f), int(c)) for f, s, c in zip(chunk, score.tolist(), cls.tolist()) if s >= threshold]
    return out


def grids_for(backbone, files: Sequence[Path], config: GridConfig, batch_size: int = 16) -> list[Grid]:
    """The grids ``config`` makes from ``files``: their confident images, shuffled with its seed."""
    return plan_grids(confident_images(backbone, files, config.threshold, batch_size), config.n, config.seed)


def grid_image(grid: Grid, backbone, n: int) -> torch.Tensor:
    """``grid``'s images tiled into one ``(3,H,W)`` image in [0,1] at the backbone's input size."""
    transform = backbone.preprocessing.eval_transform()
    cells = torch.stack([transform(load_image(f)) for f in grid.files])
    return tile(cells, n, backbone.input_size)


def cell_batch(grids: Sequence[Grid], backbone, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every cell of ``grids`` as one batch: the grid image repeated once per cell ``(N,3,H,W)``,
    each cell's class ``(N,)`` and its index in its grid ``(N,)``, grid by grid."""
    images = torch.stack([grid_image(g, backbone, n) for g in grids]).repeat_interleave(n * n, dim=0)
    targets = torch.tensor([c for g in grids for c in g.classes])
    return images, targets, torch.arange(n * n).repeat(len(grids))


def run_grid_evaluation(
    run: Run,
    files: Sequence[Path],
    methods: dict[str, Callable[[], Callable]],
    config: GridConfig,
    batch_size: int = 16,
    progress: bool = True,
    limits: dict[str, int] | None = None,
) -> list[Grid]:
    """Scores every method on grids made from ``files`` (see :class:`GridConfig`), on the first
    ``limits[name]`` grids for a method with a limit, appending one record per cell to ``run.results``
    and skipping finished cells. Returns the grids."""
    from tqdm.auto import tqdm

    done = run.open()
    backbone, n = run.backbone, config.n
    grids = grids_for(backbone, files, config, batch_size)
    per_call = max(1, batch_size // (n * n))  # whole grids per call
    with open(run.results, "a") as sink:
        for name, factory in methods.items():
            mine = min(len(grids), (limits or {}).get(name, len(grids)))
            todo = [g for g in range(mine) if any((name, f"grid{g:04d}/cell{c}") not in done for c in range(n * n))]
            method = factory() if todo else None
            bar = tqdm(total=mine, initial=mine - len(todo), desc=f"{name:>11s}", unit="grid",
                       disable=not progress, dynamic_ncols=True)  # fmt: skip
            for start in range(0, len(todo), per_call):
                chosen = todo[start : start + per_call]
                images, targets, cells = (
                    t.to(backbone.device) for t in cell_batch([grids[g] for g in chosen], backbone, n)
                )
                t0 = time.perf_counter()
                maps = method(images, targets)
                seconds = (time.perf_counter() - t0) / len(images)
                scores = grid_localization(maps.detach().float(), cells, n, config.seed)
                for i in range(len(images)):
                    g, c = chosen[i // (n * n)], int(cells[i])
                    rec = {"method": name, "file": f"grid{g:04d}/cell{c}", "target": int(targets[i])}
                    rec |= {"image": grids[g].files[c]} | {k: round(float(v[i]), 6) for k, v in scores.items()}
                    sink.write(json.dumps(rec | {"sec/map": seconds}) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                bar.update(len(chosen))
            bar.close()
    return grids
